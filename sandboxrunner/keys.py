"""Every Redis key name sandboxrunner uses, under one configurable prefix.

Data model (PREFIX defaults to ``sr``; Q is a queue name, ``default`` or ``priority``).
All keys of one queue carry the hash tag ``{PREFIX:Q}``, so a queue lives in one Redis
Cluster slot and every Lua script touches keys of one slot only.

  PREFIX:{Q}:wait            LIST   job ids waiting; LPUSH to enqueue, RPOP/BLMOVE to claim
                                    (FIFO); a redelivered job goes back to the right end.
                                    At most one ``!wake`` marker, never a job: it wakes a
                                    supervisor blocked on the list when a delayed job is
                                    due sooner (see add_delayed in scripts/_lib.lua)
  PREFIX:{Q}:active:SID      LIST   ids claimed by supervisor SID and not yet settled: the
                                    lease. It is valid while SID heartbeats (see ``sups``)
  PREFIX:{Q}:delayed         ZSET   id -> due time (ms) of a job enqueued with a delay or
                                    run_at, or of a failed job waiting out its retry's
                                    backoff (status ``delayed``, field ``due``); the claim
                                    script moves due ones to the wait list, ``queued`` again
  PREFIX:{Q}:throttled       ZSET   id -> ms its rate limit frees a slot, of a job held back
                                    by its job's ``rate_limit`` (status ``throttled``, field
                                    ``due``); the claim script moves due ones to the wait
                                    list like delayed ones, cancel.lua a cancelled one
  PREFIX:{Q}:limit:NAME      ZSET   job NAME's claims in its rate limit's sliding window
                                    (member id@ms, score ms) and the slots its throttled jobs
                                    reserved (member r:id, score ms); the claim script trims
                                    it; TTL a period past its latest entry
  PREFIX:{Q}:cancel:SID      SET    ids of running jobs of supervisor SID asked to cancel
                                    (cancel.lua); heartbeat.lua returns and clears it, so a
                                    running job learns of its cancel within a heartbeat. TTL
                                    result_ttl_ms (a dead SID never reads it)
  PREFIX:{Q}:sups            ZSET   SID -> server time (ms) of its last heartbeat for Q
  PREFIX:{Q}:paused          STRING exists while Q is paused (queue_control.py): the claim
                                    script hands out no job of Q, and puts one a BLMOVE just
                                    moved back at the head of the wait list; no TTL
  PREFIX:{Q}:resumed         STRING server ms when heartbeats of Q resumed after a silence
                                    (Redis down or stalled); TTL lease_ms. While it exists
                                    no supervisor is declared dead (see heartbeat.lua)
  PREFIX:{Q}:job:ID          HASH   the job record (fields in ``job.py``); no TTL while in
                                    flight (a queued job must never vanish), result_ttl_ms
                                    once it is settled
  PREFIX:{Q}:singleton:SKEY  STRING id of the in-flight job holding singleton key SKEY (the job
                                    name, or NAME:canonical JSON of the key, hashed when long);
                                    no TTL needed: a holder whose job is not queued or active
                                    no longer counts, so a claim cannot stay stuck
  PREFIX:{Q}:stats           HASH   counters: enqueued, completed, failed, cancelled,
                                    stalled, retried, handed_back (jobs a stopping
                                    supervisor gave back)
  PREFIX:{Q}:rate            HASH   slot (second % 60) -> "second:count" of completions;
                                    60 fields at most, read as jobs/s over the last minute
  PREFIX:{Q}:done:STATUS     ZSET   id -> settled ms of the jobs settled as STATUS
                                    (completed, failed, cancelled): the listing index
                                    (list_jobs). Added to by settle (_lib.lua), trimmed of
                                    entries older than result_ttl_ms by each script that
                                    adds (once per call), so it never outgrows the records;
                                    TTL result_ttl_ms from its newest entry
  PREFIX:{Q}:durations       HASH   per job name, a histogram of its attempts' durations
                                    (ms buckets, sum), kept by finish.lua: its layout,
                                    buckets and bound on names are in durations.py; no TTL
  PREFIX:{Q}:recent          LIST   ids of recently settled jobs, capped (dashboard)
  PREFIX:{Q}:failures        LIST   ids of recently failed jobs, capped (dashboard)
  PREFIX:{Q}:log:ID          STREAM log lines of one job, capped, TTL as the record
  PREFIX:{Q}:cron            HASH   job name -> JSON schedule (pattern, tz, next, last...)
                                    (a tick is claimed by compare-and-set on its ``last``
                                    field, so no per-tick keys; ``@sync`` marks a synced hash)
  PREFIX:{Q}:reply:CID       sharded pub/sub channel (SPUBLISH) of a client process: Q's
                                    settled jobs it waits for (in a cluster, on Q's node),
                                    and their progress reports (progress.lua)

Keys outside any queue (never touched by a script together with queue keys):

  PREFIX:supervisor:SID      STRING JSON snapshot of a supervisor (host, pid, children,
                                    CPU, RSS), TTL a few heartbeats: gone when it stops
  PREFIX:supervisors         ZSET   SID -> last heartbeat ms (index for the dashboard)
  PREFIX:logs                STREAM recent log lines across all jobs, capped

Scripts that touch per-job keys (``job:ID``, ``singleton:...``, ``limit:NAME``) get the
queue's key prefix (``PREFIX:{PREFIX:Q}:``) in ARGV and append the rest, as BullMQ does:
the ids are only known inside the script (popped from a list), and the prefix carries the
queue's hash tag, so every key a script touches stays in the slot its declared KEYS name.
Fixed keys come in KEYS.

Job ids are ``Q-<32 hex>``, or ``Q-KEY`` for an idempotency key KEY (``job_id=``): the
queue is part of the id, so a result can be fetched from the id alone.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

QUEUES: tuple[str, ...] = ("default", "priority")
# the wake marker of a wait list (scripts/_lib.lua spells it too): readers that count
# waiting jobs leave it out
WAKE_MARKER = "!wake"


def new_job_id(queue: str) -> str:
    """A fresh job id of QUEUE (`queue_of_job` reads the queue back)."""
    return f"{queue}-{uuid.uuid4().hex}"


def new_job_ids(queue: str, count: int) -> list[str]:
    """COUNT fresh job ids of QUEUE, as random as `new_job_id`'s, in one draw of
    randomness (a batch's ids: see bulk.py)."""
    digits = os.urandom(16 * count).hex()
    return [f"{queue}-{digits[i:i + 32]}" for i in range(0, 32 * count, 32)]


def queue_of_job(job_id: str) -> str:
    """The queue encoded in a job id (``default-ab12...`` -> ``default``)."""
    queue, sep, rest = job_id.partition("-")
    if not sep or queue not in QUEUES or not rest:
        raise ValueError(f"not a sandboxrunner job id: {job_id!r}")
    return queue


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix; one instance per configured prefix."""

    prefix: str = "sr"

    def _q(self, queue: str) -> str:
        return f"{self.prefix}:{{{self.prefix}:{queue}}}"

    def queue_prefix(self, queue: str) -> str:
        """Prefix of every key of a queue; scripts append ``job:ID`` and the like to it."""
        return f"{self._q(queue)}:"

    def wait(self, queue: str) -> str:
        return f"{self._q(queue)}:wait"

    def active(self, queue: str, sid: str) -> str:
        return f"{self._q(queue)}:active:{sid}"

    def delayed(self, queue: str) -> str:
        return f"{self._q(queue)}:delayed"

    def throttled(self, queue: str) -> str:
        return f"{self._q(queue)}:throttled"

    def cancel_requests(self, queue: str, sid: str) -> str:
        return f"{self._q(queue)}:cancel:{sid}"

    def sups(self, queue: str) -> str:
        return f"{self._q(queue)}:sups"

    def paused(self, queue: str) -> str:
        return f"{self._q(queue)}:paused"

    def limit(self, queue: str, name: str) -> str:
        return f"{self._q(queue)}:limit:{name}"

    def resumed(self, queue: str) -> str:
        return f"{self._q(queue)}:resumed"

    def job(self, job_id: str) -> str:
        return f"{self._q(queue_of_job(job_id))}:job:{job_id}"

    def singleton(self, queue: str, skey: str) -> str:
        return f"{self._q(queue)}:singleton:{skey}"

    def new_job(self, queue: str, job_id: str, singleton_key: str) -> list[str]:
        """The keys a new job writes outside its queue's lists: its record, and its
        singleton holder when it has a singleton key ('' = none)."""
        keys = [self.job(job_id)]
        if singleton_key:
            keys.append(self.singleton(queue, singleton_key))
        return keys

    def stats(self, queue: str) -> str:
        return f"{self._q(queue)}:stats"

    def rate(self, queue: str) -> str:
        return f"{self._q(queue)}:rate"

    def done(self, queue: str, status: str) -> str:
        return f"{self._q(queue)}:done:{status}"

    def durations(self, queue: str) -> str:
        return f"{self._q(queue)}:durations"

    def recent(self, queue: str) -> str:
        return f"{self._q(queue)}:recent"

    def failures(self, queue: str) -> str:
        return f"{self._q(queue)}:failures"

    def job_log(self, job_id: str) -> str:
        return f"{self._q(queue_of_job(job_id))}:log:{job_id}"

    def cron(self, queue: str) -> str:
        return f"{self._q(queue)}:cron"

    def supervisor(self, sid: str) -> str:
        return f"{self.prefix}:supervisor:{sid}"

    def supervisors(self) -> str:
        return f"{self.prefix}:supervisors"

    def logs(self) -> str:
        return f"{self.prefix}:logs"

    def reply_channel(self, queue: str, cid: str) -> str:
        return f"{self._q(queue)}:reply:{cid}"
