"""The Redis layer: the Lua scripts and typed calls; with its read side (``store_reads.py``)
and its cron calls (``store_cron.py``), which `Store` inherits, the only module that talks
to Redis (``async_store.py`` holds the
asyncio twins of the callers' calls; the job's records these calls take and return, and
their wire forms, are in ``job.py``). Every command goes
through a `routing.Router`, which sends it to the server holding its key, whatever the
kind of deployment (one server, Sentinels, a cluster; connections come from
``connection.py``), and sends again what a redirect says did not run. Other modules get
what they need from here: the listeners a subscription, the job log sink and `logs` the
log streams, the dashboard its reads and each server's INFO.

Every multi-step change is one Lua script from ``scripts/`` (``_lib.lua`` is prepended to
each, below its ``#!lua`` flags line: whether a full Redis refuses it up front or lets it
run, see each script's header), routed by its first key (all its keys share the queue's
hash tag); single reads go straight through. Blocking reads (BLMOVE) use their own
connections, so a supervisor's heartbeat never waits behind them. See ``keys.py`` for the
data model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container, Iterable, Sequence
from importlib import resources
from typing import Any

from redis.retry import Retry

from .bulk import BatchResult, PreparedBatch
from .config import Config
from .connection import caller_retry
from .job import ClaimedJob as ClaimedJob
from .job import (
    EnqueueResult,
    Outcome,
    PreparedJob,
    claimed_batch,
    text,
)
from .job import Settlement as Settlement
from .job_errors import ErrorInfo
from .keys import QUEUES, Keys, queue_of_job
from .progress import ProgressReport
from .redirects import Replicas
from .routing import Router
from .routing import check_reachable as check_reachable  # re-exported
from .store_cron import StoreCron
from .store_reads import checked
from .supervision import (
    JobWatch,
    SupervisorSeen,
    live_commands,
    live_from,
    watch_commands,
    watch_from,
)

SCRIPT_NAMES = ("enqueue", "claim", "finish", "heartbeat", "requeue_stalled", "hand_back",
                "attach", "cron_sync", "cron_fire", "progress", "cancel", "retry", "delete",
                "cron_run_now", "enqueue_many")
# the error of a running job asked to cancel that ended another way: its handler returned
# (finish.lua), or its supervisor stopped (hand_back.lua) or died (requeue_stalled.lua)
CANCELLED_WHILE_RUNNING = ErrorInfo.cancelled("cancelled while it ran").to_json()
CANCELLED_WAITING = ErrorInfo.cancelled("cancelled before it ran").to_json()
DELETED_WAITING = ErrorInfo.deleted().to_json()
BLOCK_TIMEOUT_S = 1.0
SUPERVISOR_INDEX_KEEP_MS = 3_600_000


def _script_source(name: str) -> str:
    """The script NAME with _lib.lua prepended, below its flags line (``#!lua flags=...``
    must come first of all for Redis to read it)."""
    folder = resources.files("sandboxrunner") / "scripts"
    lib = (folder / "_lib.lua").read_text()
    flags, _, body = (folder / f"{name}.lua").read_text().partition("\n")
    return f"{flags}\n{lib}\n{body}"


SCRIPT_SOURCES = {name: _script_source(name) for name in SCRIPT_NAMES}
SCRIPT_SHAS = {name: hashlib.sha1(source.encode()).hexdigest()
               for name, source in SCRIPT_SOURCES.items()}
SOURCES_BY_SHA = {SCRIPT_SHAS[name]: source for name, source in SCRIPT_SOURCES.items()}


def replicas_of(config: Config) -> Replicas | None:
    """WAIT's arguments after each enqueue and settlement (None: ``wait_replicas`` 0)."""
    if not config.wait_replicas:
        return None
    return (config.wait_replicas, config.wait_replicas_timeout)


def enqueue_keys(keys: Keys, job: PreparedJob) -> list[str]:
    """The KEYS of enqueue.lua for JOB."""
    return [keys.wait(job.queue), keys.stats(job.queue), keys.sups(job.queue),
            *keys.new_job(job.queue, job.job_id, job.singleton_key)]


def batch_keys(keys: Keys, queue: str) -> list[str]:
    """The KEYS of enqueue_many.lua for a batch of QUEUE."""
    return [keys.wait(queue), keys.stats(queue), keys.sups(queue)]


def rate_limits_arg(limits: Iterable[tuple[str, int, int]]) -> str:
    """The claim script's rate limits: 'NAME COUNT PERIOD_MS ...' ('' = none)."""
    return " ".join(f"{name} {count} {period_ms}" for name, count, period_ms in limits)


def live_supervisors_at(config: Config, url: str) -> list[SupervisorSeen]:
    """The supervisors heartbeating within their lease on URL's server (config's lease
    for one whose snapshot is gone)."""
    store = Store(config, url, retry=caller_retry())
    try:
        return [s for s in store.supervisors_seen() if s.live(config.lease_ms)]
    finally:
        store.close()


class Store(StoreCron):
    """Synchronous access to one Redis for one key prefix."""

    PAUSED = -2  # a claim's "ms until the next delayed job" when its queue is paused

    def __init__(self, config: Config, url: str, *, retry: Retry | None = None,
                 socket_timeout: float | None = None,
                 connect_timeout: float | None = None) -> None:
        """RETRY: redis-py's retry of single commands (None: its default); callers pass
        `caller_retry()`, as their own rule governs how long they wait for Redis. The
        timeouts (s) bound each read and connect (None: connection.py's defaults)."""
        self.config = config
        self.url = url
        self.keys = Keys(config.key_prefix)
        self.router = Router(url, retry=retry, socket_timeout=socket_timeout,
                             connect_timeout=connect_timeout,
                             block_timeout_s=BLOCK_TIMEOUT_S, scripts=SOURCES_BY_SHA)
        self.replicas = replicas_of(config)

    def close(self) -> None:
        self.router.close()

    def _run(self, name: str, keys: list[str], args: list[Any],
             replicated: bool = False) -> Any:
        """Run script NAME on the server holding KEYS (one round trip; a server that lacks
        the script gets it as EVAL). An error reply is raised; a lost connection is not
        retried here: the error reaches the caller, who knows whether a replay is safe (a
        replayed claim would strand the first one's jobs in the lease). REPLICATED: with
        ``wait_replicas`` set, the write must reach that many replicas (routing.py)."""
        (reply,) = self.router.send(keys[0], [
            ("EVALSHA", SCRIPT_SHAS[name], len(keys), *keys, *args)],
            replicas=self.replicas if replicated else None)
        if isinstance(reply, Exception):
            raise reply
        return reply

    # -- producers -------------------------------------------------------------------
    def enqueue(self, job: PreparedJob, reply_cid: str = "") -> EnqueueResult:
        """Enqueue JOB (or attach to the job it names already, or to the in-flight
        singleton holding its key); REPLY_CID: the client notified when it settles."""
        return EnqueueResult.from_reply(self._run(
            "enqueue", enqueue_keys(self.keys, job),
            [self.keys.queue_prefix(job.queue), reply_cid, self.config.lease_ms,
             *job.script_args(), *job.schedule_args()], replicated=True))

    def enqueue_many(self, batch: PreparedBatch) -> BatchResult:
        """Enqueue every call of BATCH, or none (bulk.py); per call, the job it is."""
        k = self.keys
        return BatchResult.from_reply(batch, self._run(
            "enqueue_many", batch_keys(k, batch.queue),
            [k.queue_prefix(batch.queue), self.config.lease_ms, *batch.script_args()],
            replicated=True))

    def attach(self, job_id: str, cid: str) -> Outcome | str:
        """The outcome if settled; the status text if still in flight ('' = no such job)."""
        return Outcome.from_attach(job_id, self._run("attach", [self.keys.job(job_id)], [cid]))

    def live_supervisors(self, queue: str) -> int:
        """How many supervisors of QUEUE heartbeat within a lease: one round trip."""
        return live_from(self.router.send(self.keys.sups(queue),
                                          live_commands(self.keys, queue)),
                         self.config.lease_ms)

    def watch(self, job_id: str) -> JobWatch:
        """What a waiting caller reads about its job's supervision: one round trip."""
        return watch_from(job_id, self.router.send(self.keys.job(job_id),
                                                   watch_commands(self.keys, job_id)))

    def memory_info(self) -> list[dict[str, Any]]:
        """INFO memory of each master (used_memory, maxmemory, maxmemory_policy: see
        preflight.py)."""
        return [dict(client.info("memory")) for _, client in self.router.masters()]

    def probe_reply_channel(self) -> None:
        """SPUBLISH to a reply channel of each queue that nobody listens on: raises
        NoPermissionError where an ACL refuses the reply channels (preflight.py)."""
        for queue in QUEUES:
            channel = self.keys.reply_channel(queue, "probe")
            checked(self.router.send(channel, [("SPUBLISH", channel, "")]))

    # -- supervisors -----------------------------------------------------------------
    def claim(self, queue: str, sid: str, count: int, again: Sequence[str] = (),
              limits: str = "") -> tuple[list[ClaimedJob], int]:
        """Up to COUNT waiting jobs (plus AGAIN: ids in SID's lease to hand over again),
        and the ms until the next delayed or throttled job is due (-1: none; PAUSED).
        LIMITS: the rate limits of the queue's jobs (`rate_limits_arg`)."""
        return claimed_batch(self._run("claim", self._claim_keys(queue, sid),
                                        [self.keys.queue_prefix(queue), sid, count, "0",
                                         limits, *again]))

    def wait_and_claim(self, queue: str, sid: str, count: int,
                       timeout_s: float = BLOCK_TIMEOUT_S,
                       limits: str = "") -> tuple[list[ClaimedJob], int]:
        """Block until a job is waiting (at most TIMEOUT_S), then claim it and up to
        COUNT - 1 more: one round trip, as the claim is pipelined behind the BLMOVE on
        a blocking connection and Redis runs it the moment the BLMOVE returns."""
        k = self.keys
        keys = self._claim_keys(queue, sid)
        args: list[str | int] = [k.queue_prefix(queue), sid, max(count - 1, 0), "1", limits]
        moved, claimed = self.router.send(keys[0], [
            ("BLMOVE", k.wait(queue), k.active(queue, sid), "RIGHT", "LEFT", timeout_s),
            ("EVALSHA", SCRIPT_SHAS["claim"], len(keys), *keys, *args)], blocking=True)
        if isinstance(moved, Exception):
            raise moved
        if isinstance(claimed, Exception):
            raise claimed
        return claimed_batch(claimed)

    def interrupt_waits(self) -> int:
        """Cut short the blocking waits (BLMOVE) this store has under way: each returns
        as if it timed out, and its pipelined claim runs as usual (see blocking.py).
        Returns how many were cut short (0: none was blocked yet)."""
        return self.router.interrupt_blocking()

    def _claim_keys(self, queue: str, sid: str) -> list[str]:
        k = self.keys
        return [k.wait(queue), k.active(queue, sid), k.delayed(queue), k.paused(queue),
                k.throttled(queue)]

    def set_paused(self, queue: str, paused: bool) -> bool:
        """Pause QUEUE (or resume it); whether that changed anything."""
        key = self.keys.paused(queue)
        command = ("SET", key, "1", "NX") if paused else ("DEL", key)
        return bool(checked(self.router.send(key, [command]))[0])

    def finish(self, queue: str, sid: str, settlements: list[Settlement],
               logged: Container[str] | None = None) -> int:
        """Settle outcomes; LOGGED holds the ids of jobs that wrote log lines (None: any
        may have), whose log streams get the result's TTL."""
        k = self.keys
        args: list[Any] = [k.queue_prefix(queue), self.config.result_ttl,
                           self.config.history_size, k.reply_channel(queue, ""),
                           CANCELLED_WHILE_RUNNING]
        for s in settlements:
            wrote = logged is None or s.job_id in logged
            args += [s.job_id, s.status.value, s.body, "1" if wrote else "0"]
        return int(self._run(
            "finish",
            [k.active(queue, sid), k.stats(queue), k.recent(queue), k.failures(queue),
             k.rate(queue), k.delayed(queue), k.wait(queue), k.durations(queue),
             *(k.job(s.job_id) for s in settlements)],
            args, replicated=True,
        ))

    def record_progress(self, queue: str, sid: str, reports: Sequence[ProgressReport]) -> int:
        """Store REPORTS of QUEUE's jobs running on SID and publish them to their callers
        (progress.lua); returns how many were recorded."""
        k = self.keys
        args: list[Any] = [sid, k.reply_channel(queue, "")]
        for report in reports:
            args += [report.job_id, report.to_json()]
        return int(self._run("progress", [k.job(r.job_id) for r in reports], args))

    def heartbeat(self, queue: str, sid: str) -> list[str]:
        """Renew SID's lease on QUEUE; returns the supervisors whose lease lapsed."""
        return self.heartbeat_and_cancels(queue, sid)[0]

    def heartbeat_and_cancels(self, queue: str, sid: str) -> tuple[list[str], list[str]]:
        """Renew SID's lease on QUEUE; returns the supervisors whose lease lapsed, and the
        ids of SID's running jobs asked to cancel since the last heartbeat."""
        k = self.keys
        dead, cancels = self._run(
            "heartbeat", [k.sups(queue), k.resumed(queue), k.cancel_requests(queue, sid)],
            [sid, self.config.lease_ms])
        return [text(d) for d in dead if text(d) != sid], [text(i) for i in cancels]

    def retry(self, job_id: str) -> tuple[str, str, str]:
        """Queue failed or cancelled JOB_ID again (retry.lua): its outcome ('queued',
        'refused', 'busy' or 'missing'), its status before, the singleton holder if busy."""
        k, queue = self.keys, queue_of_job(job_id)
        outcome, status, holder = self._run(
            "retry", [k.job(job_id), k.wait(queue), k.stats(queue)],
            [k.queue_prefix(queue), job_id], replicated=True)
        return text(outcome), text(status), text(holder)

    def cancel(self, job_id: str) -> tuple[str, str]:
        """Cancel JOB_ID (cancel.lua): its outcome ('cancelled', 'cancelling', 'settled' or
        'missing') and its status before."""
        k, queue = self.keys, queue_of_job(job_id)
        outcome, status = self._run(
            "cancel", [k.job(job_id), k.wait(queue), k.delayed(queue), k.throttled(queue),
                       k.stats(queue), k.recent(queue)],
            [k.queue_prefix(queue), job_id, self.config.result_ttl, self.config.history_size,
             k.reply_channel(queue, ""), CANCELLED_WAITING], replicated=True)
        return text(outcome), text(status)

    def delete(self, job_id: str) -> tuple[str, str, str]:
        """Delete JOB_ID (delete.lua): its outcome ('deleted', 'dequeued', 'running' or
        'missing'), its status before and its job name."""
        k, queue = self.keys, queue_of_job(job_id)
        outcome, status, name = self._run(
            "delete", [k.job(job_id), k.wait(queue), k.delayed(queue), k.throttled(queue),
                       k.stats(queue), k.recent(queue), k.failures(queue),
                       *(k.done(queue, s) for s in ("completed", "failed", "cancelled")),
                       k.job_log(job_id)],
            [k.queue_prefix(queue), job_id, k.reply_channel(queue, ""), DELETED_WAITING],
            replicated=True)
        return text(outcome), text(status), text(name)

    def requeue_stalled(self, queue: str, dead_sid: str) -> tuple[int, int]:
        k = self.keys
        got = self._run(
            "requeue_stalled",
            [k.sups(queue), k.active(queue, dead_sid), k.wait(queue), k.stats(queue),
             k.recent(queue), k.failures(queue), k.rate(queue)],
            [k.queue_prefix(queue), dead_sid, self.config.lease_ms, self.config.max_stalled,
             self.config.result_ttl, self.config.history_size, k.reply_channel(queue, ""),
             ErrorInfo.stalled(self.config.max_stalled).to_json(), CANCELLED_WHILE_RUNNING],
        )
        return int(got[0]), int(got[1])

    def hand_back(self, queue: str, sid: str) -> int:
        """A stopping supervisor hands back the jobs it still holds (they run elsewhere;
        not counted as stalls); returns how many."""
        k = self.keys
        return int(self._run("hand_back",
                             [k.sups(queue), k.active(queue, sid), k.wait(queue), k.stats(queue),
                              k.recent(queue)],
                             [k.queue_prefix(queue), sid, self.config.result_ttl,
                              k.reply_channel(queue, ""), CANCELLED_WHILE_RUNNING]))

    def publish_supervisor(self, sid: str, snapshot: dict[str, Any], ttl_ms: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.supervisor(sid), json.dumps(snapshot), px=ttl_ms)
        heartbeat_ms = snapshot.get("heartbeat_ms", 0)
        pipe.zadd(self.keys.supervisors(), {sid: heartbeat_ms})
        # forget supervisors that crashed long ago, so the index stays bounded
        pipe.zremrangebyscore(self.keys.supervisors(), "-inf",
                              heartbeat_ms - SUPERVISOR_INDEX_KEEP_MS)
        pipe.execute()

    def remove_supervisor(self, sid: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.keys.supervisor(sid))
        pipe.zrem(self.keys.supervisors(), sid)
        for queue in QUEUES:
            pipe.zrem(self.keys.sups(queue), sid)
        pipe.execute()

    def subscribe_replies(self, queue: str, cid: str) -> Any:
        """A redis-py PubSub subscribed (confirmed) to client CID's reply channel of QUEUE,
        on the server holding QUEUE."""
        return self.router.subscribe(self.keys.reply_channel(queue, cid))

    def subscription_current(self, pubsub: Any) -> bool:
        """Whether a subscription of `subscribe_replies` is still where replies come (a
        Sentinel failover moves them to the new master)."""
        return self.router.still_current(pubsub)

    # -- job log lines (joblog.py holds their format and bounds) ---------------------------
    def append_log_lines(self, lines: list[tuple[str, str]], ttl_ms: int,
                         recent_max: int) -> None:
        """Append LINES ((job id, JSON line), in order) to each job's log stream and to
        the capped stream of recent lines (about RECENT_MAX kept); a job's stream expires
        TTL_MS after its last line (the finish script sets its final TTL)."""
        pipe = self.redis.pipeline(transaction=False)
        streams = set()
        for job_id, line in lines:
            stream = self.keys.job_log(job_id)
            pipe.xadd(stream, {"line": line})
            pipe.xadd(self.keys.logs(), {"job": job_id, "line": line}, maxlen=recent_max,
                      approximate=True)
            streams.add(stream)
        for stream in streams:
            pipe.pexpire(stream, ttl_ms)
        pipe.execute()
