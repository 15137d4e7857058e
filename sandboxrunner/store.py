"""The Redis layer: the Lua scripts and typed calls (connections come from
``connection.py``; ``async_store.py`` holds the asyncio twins of the callers' calls; the
job's records these calls take and return, and their wire forms, are in ``job.py``).

Every multi-step change is one Lua script from ``scripts/`` (``_lib.lua`` is prepended to
each, below its ``#!lua`` flags line: whether a full Redis refuses it up front or lets it
run, see each script's header); single reads go straight through. Blocking reads (BLMOVE)
use their own connection, so a supervisor's heartbeat never waits behind them. See
``keys.py`` for the data model.
"""

from __future__ import annotations

import json
from collections.abc import Container, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError
from redis.retry import Retry

from .blocking import BlockingConnections, exchange
from .config import Config
from .connection import caller_retry, connect
from .connection import check_reachable as check_reachable  # re-exported
from .forkguard import FORK_GUARD
from .job import ClaimedJob as ClaimedJob  # re-exported: child.py and processes.py import it
from .job import (
    CronFired,
    CronRun,
    EnqueueResult,
    ErrorInfo,
    Outcome,
    PreparedJob,
    claimed_batch,
    text,
)
from .job import Settlement as Settlement  # re-exported: child.py and processes.py import it
from .keys import QUEUES, Keys
from .supervision import (
    JobWatch,
    SupervisorSeen,
    live_commands,
    live_from,
    newest_per_supervisor,
    server_ms,
    watch_commands,
    watch_from,
    with_snapshot,
)

SCRIPT_NAMES = ("enqueue", "claim", "finish", "heartbeat", "requeue_stalled", "hand_back",
                "attach", "cron_sync", "cron_fire")
BLOCK_TIMEOUT_S = 1.0
SUPERVISOR_INDEX_KEEP_MS = 3_600_000
LISTED_PER_END = 1000  # ids read from each end of a wait list when resolving a short id


def _script_source(name: str) -> str:
    """The script NAME with _lib.lua prepended, below its flags line (``#!lua flags=...``
    must come first of all for Redis to read it)."""
    folder = resources.files("sandboxrunner") / "scripts"
    lib = (folder / "_lib.lua").read_text()
    flags, _, body = (folder / f"{name}.lua").read_text().partition("\n")
    return f"{flags}\n{lib}\n{body}"


SCRIPT_SOURCES = {name: _script_source(name) for name in SCRIPT_NAMES}


@dataclass(frozen=True)
class CronHashes:
    """The cron hashes of some queues (name -> schedule JSON, plus '@sync') and how many
    supervisors of each heartbeat within a lease, read at server_ms."""

    server_ms: int
    schedules: dict[str, dict[str, str]]
    live_supervisors: dict[str, int]


def _send(client: redis.Redis, *commands: tuple[Any, ...]) -> list[Any]:
    """Send COMMANDS in one write on a connection of CLIENT's pool and read their
    replies (see `exchange`)."""
    pool = client.connection_pool
    conn: Any = pool.get_connection()  # redis-py's Connection methods are untyped
    try:
        return exchange(conn, commands)
    finally:
        pool.release(conn)


def _checked(replies: list[Any]) -> list[Any]:
    """REPLIES of `_send`, raising the first error reply among them."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def live_supervisors_at(config: Config, url: str) -> list[SupervisorSeen]:
    """The supervisors heartbeating within their lease on URL's server (config's lease
    for one whose snapshot is gone)."""
    store = Store(config, url, retry=caller_retry())
    try:
        return [s for s in store.supervisors_seen() if s.live(config.lease_ms)]
    finally:
        store.close()


class Store:
    """Synchronous access to one Redis for one key prefix."""

    def __init__(self, config: Config, url: str, *, retry: Retry | None = None) -> None:
        """RETRY: redis-py's retry of single commands (None: its default); callers pass
        `caller_retry()`, as their own rule governs how long they wait for Redis."""
        self.config = config
        self.url = url
        self.keys = Keys(config.key_prefix)
        self.redis = connect(url) if retry is None else connect(url, retry=retry)
        self._blocking = BlockingConnections(connect(url, socket_timeout=BLOCK_TIMEOUT_S + 5))
        with FORK_GUARD.shared():  # each script is hashed (SHA1) by OpenSSL
            self._scripts = {n: self.redis.register_script(s)
                             for n, s in SCRIPT_SOURCES.items()}
        self.reply_prefix = self.keys.reply_channel("")

    def close(self) -> None:
        self.redis.close()
        self._blocking.close()

    def _run(self, name: str, keys: list[str], args: list[Any], client: Any = None) -> Any:
        return self._scripts[name](keys=keys, args=args, client=client)

    def _run_once(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script of the hot path (enqueue, claim, finish) with no replay on a
        connection error: the error reaches the caller, who knows whether a replay is
        safe (a replayed claim would strand the first one's jobs in the lease)."""
        script = self._scripts[name]
        (reply,) = _send(self.redis, ("EVALSHA", script.sha, len(keys), *keys, *args))
        if isinstance(reply, NoScriptError):  # a restarted server: load it, run it
            return script(keys=keys, args=args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    # -- producers -------------------------------------------------------------------
    def enqueue(self, job: PreparedJob, reply_cid: str = "") -> EnqueueResult:
        """Enqueue JOB (or attach to the job it names already, or to the in-flight
        singleton holding its key); REPLY_CID: the client notified when it settles."""
        k = self.keys
        return EnqueueResult.from_reply(self._run_once(
            "enqueue", [k.wait(job.queue), k.stats(job.queue), k.sups(job.queue)],
            [k.queue_prefix(job.queue), reply_cid, self.config.lease_ms, *job.script_args()]))

    def attach(self, job_id: str, cid: str) -> Outcome | str:
        """The outcome if settled; the status text if still in flight ('' = no such job)."""
        return Outcome.from_attach(job_id, self._run("attach", [self.keys.job(job_id)], [cid]))

    def live_supervisors(self, queue: str) -> int:
        """How many supervisors of QUEUE heartbeat within a lease: one round trip."""
        return live_from(_send(self.redis, *live_commands(self.keys, queue)),
                         self.config.lease_ms)

    def watch(self, job_id: str) -> JobWatch:
        """What a waiting caller reads about its job's supervision: one round trip."""
        return watch_from(job_id, _send(self.redis, *watch_commands(self.keys, job_id)))

    def supervisors_seen(self) -> list[SupervisorSeen]:
        """Every supervisor of any queue's ``sups`` set, named by its snapshot."""
        k = self.keys
        time_reply, *sups = _checked(_send(
            self.redis, ("TIME",), *(("ZRANGE", k.sups(q), 0, -1, "WITHSCORES")
                                     for q in QUEUES)))
        seen = newest_per_supervisor(server_ms(time_reply), sups)
        if not seen:
            return []
        raws = self.redis.mget([k.supervisor(s.sid) for s in seen])
        return [with_snapshot(one, raw) for one, raw in zip(seen, raws, strict=True)]

    def memory_info(self) -> dict[str, Any]:
        """INFO memory (used_memory, maxmemory, maxmemory_policy: see preflight.py)."""
        return dict(self.redis.info("memory"))

    def probe_reply_channel(self) -> None:
        """PUBLISH to a reply channel nobody listens on: raises NoPermissionError where an
        ACL refuses the reply channels (preflight.py)."""
        self.redis.publish(self.keys.reply_channel("probe"), "")

    def server_time_ms(self) -> int:
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def job_fields(self, job_id: str, *fields: str) -> list[str]:
        return [text(v) for v in self.redis.hmget(self.keys.job(job_id), list(fields))]

    # -- supervisors -----------------------------------------------------------------
    def claim(self, queue: str, sid: str, count: int,
              again: Sequence[str] = ()) -> tuple[list[ClaimedJob], int]:
        """Up to COUNT waiting jobs (plus AGAIN: ids in SID's lease to hand over again),
        and the ms until the next retry is due (-1: none delayed)."""
        return claimed_batch(self._run_once("claim", self._claim_keys(queue, sid),
                                        [self.keys.queue_prefix(queue), sid, count, "0",
                                         *again]))

    def wait_and_claim(self, queue: str, sid: str, count: int,
                       timeout_s: float = BLOCK_TIMEOUT_S) -> tuple[list[ClaimedJob], int]:
        """Block until a job is waiting (at most TIMEOUT_S), then claim it and up to
        COUNT - 1 more: one round trip, as the claim is pipelined behind the BLMOVE on
        the blocking connection and Redis runs it the moment the BLMOVE returns."""
        k = self.keys
        keys = self._claim_keys(queue, sid)
        args: list[str | int] = [k.queue_prefix(queue), sid, max(count - 1, 0), "1"]
        moved, claimed = self._blocking.send(
            ("BLMOVE", k.wait(queue), k.active(queue, sid), "RIGHT", "LEFT", timeout_s),
            ("EVALSHA", self._scripts["claim"].sha, len(keys), *keys, *args))
        if isinstance(moved, Exception):
            raise moved
        if isinstance(claimed, NoScriptError):  # a restarted server: load it, claim again
            claimed = self._scripts["claim"](keys=keys, args=args)
        elif isinstance(claimed, Exception):
            raise claimed
        return claimed_batch(claimed)

    def interrupt_waits(self) -> int:
        """Cut short the blocking waits (BLMOVE) this store has under way: each returns
        as if it timed out, and its pipelined claim runs as usual (see blocking.py).
        Returns how many were cut short (0: none was blocked yet)."""
        return self._blocking.interrupt(self.redis)

    def _claim_keys(self, queue: str, sid: str) -> list[str]:
        k = self.keys
        return [k.wait(queue), k.active(queue, sid), k.delayed(queue)]

    def lease_ids(self, queue: str, sid: str) -> list[str]:
        """The ids in SID's active list (its lease) on QUEUE."""
        return [text(i) for i in self.redis.lrange(self.keys.active(queue, sid), 0, -1)]

    def finish(self, queue: str, sid: str, settlements: list[Settlement],
               logged: Container[str] | None = None) -> int:
        """Settle outcomes; LOGGED holds the ids of jobs that wrote log lines (None: any
        may have), whose log streams get the result's TTL."""
        k = self.keys
        args: list[Any] = [k.queue_prefix(queue), self.config.result_ttl,
                           self.config.history_size, self.reply_prefix]
        for s in settlements:
            wrote = logged is None or s.job_id in logged
            args += [s.job_id, s.status.value, s.body, "1" if wrote else "0"]
        return int(self._run_once(
            "finish",
            [k.active(queue, sid), k.stats(queue), k.recent(queue), k.failures(queue),
             k.rate(queue), k.delayed(queue), k.wait(queue)],
            args,
        ))

    def heartbeat(self, queue: str, sid: str) -> list[str]:
        """Renew SID's lease on QUEUE; returns the supervisors whose lease lapsed."""
        dead = self._run("heartbeat", [self.keys.sups(queue), self.keys.resumed(queue)],
                         [sid, self.config.lease_ms])
        return [text(d) for d in dead if text(d) != sid]

    def requeue_stalled(self, queue: str, dead_sid: str) -> tuple[int, int]:
        k = self.keys
        got = self._run(
            "requeue_stalled",
            [k.sups(queue), k.active(queue, dead_sid), k.wait(queue), k.stats(queue),
             k.recent(queue), k.failures(queue), k.rate(queue)],
            [k.queue_prefix(queue), dead_sid, self.config.lease_ms, self.config.max_stalled,
             self.config.result_ttl, self.config.history_size, self.reply_prefix,
             ErrorInfo.stalled(self.config.max_stalled).to_json()],
        )
        return int(got[0]), int(got[1])

    def hand_back(self, queue: str, sid: str) -> int:
        """A stopping supervisor hands back the jobs it still holds (they run elsewhere;
        not counted as stalls); returns how many."""
        k = self.keys
        return int(self._run("hand_back",
                             [k.sups(queue), k.active(queue, sid), k.wait(queue), k.stats(queue)],
                             [k.queue_prefix(queue), sid]))

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

    # -- cron (see cron.py) ----------------------------------------------------------
    def cron_sync(self, queue: str, sid: str, entries: list[tuple[str, str, str, int, str]],
                  without_cron: Sequence[str] = ()) -> tuple[list[str], ...]:
        """Sync QUEUE's schedules with ENTRIES (name, pattern, tz, next ms, error), deleting
        those of WITHOUT_CRON (jobs the caller has with no cron on QUEUE; see cron_sync.lua);
        returns the names added or changed, removed, and kept without the caller."""
        args: list[Any] = [sid, json.dumps(list(without_cron))]
        for entry in entries:
            args += list(entry)
        replies = self._run("cron_sync", [self.keys.cron(queue)], args)
        return tuple([text(n) for n in names] for names in replies)

    def cron_fire(self, run: CronRun) -> CronFired:
        """Enqueue (or skip, for a busy singleton) one tick of a schedule, at most once."""
        k, queue = self.keys, run.call.queue
        got = self._run(
            "cron_fire", [k.cron(queue), k.wait(queue), k.stats(queue)],
            [k.queue_prefix(queue), run.pattern, run.tz, run.tick_ms, run.next_ms,
             *run.call.script_args()])
        return CronFired(text(got[0]), text(got[1]), int(got[2]))

    def cron_schedules(self, queues: tuple[str, ...]) -> CronHashes:
        """Every queue's cron hash and live supervisor count, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.time()
        for queue in queues:
            pipe.hgetall(self.keys.cron(queue))
            pipe.zrange(self.keys.sups(queue), 0, -1, withscores=True)
        (seconds, micros), *replies = pipe.execute()
        server_ms = int(seconds) * 1000 + int(micros) // 1000
        hashes, beats = replies[0::2], replies[1::2]
        return CronHashes(
            server_ms=server_ms,
            schedules={queue: {text(k): text(v) for k, v in raw.items()}
                       for queue, raw in zip(queues, hashes, strict=True)},
            live_supervisors={
                queue: sum(1 for _, beat_ms in sups if beat_ms >= server_ms - self.config.lease_ms)
                for queue, sups in zip(queues, beats, strict=True)},
        )

    def cron_remove(self, queue: str, name: str) -> bool:
        """Delete NAME's schedule from QUEUE's cron hash (one command: no script needed)."""
        return bool(self.redis.hdel(self.keys.cron(queue), name))

    def job_statuses(self, job_ids: list[str]) -> list[str]:
        """The status of each job ('' when it has no record), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "status")
        return [text(s) for s in pipe.execute()] if job_ids else []

    # -- finding a job from the start of its id (the short ids `top` shows) -----------
    def listed_job_ids(self, queues: Sequence[str] = QUEUES) -> set[str]:
        """The ids Redis lists anyway, in two round trips and no key scan: the jobs each
        supervisor holds (its lease), both ends of the wait list, those waiting for a
        retry, and each queue's history of settled and failed jobs."""
        k, end = self.keys, LISTED_PER_END - 1
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.zrange(k.sups(queue), 0, -1)
            pipe.lrange(k.wait(queue), 0, end)
            pipe.lrange(k.wait(queue), -LISTED_PER_END, -1)
            pipe.zrange(k.delayed(queue), 0, end)
            pipe.lrange(k.recent(queue), 0, self.config.history_size - 1)
            pipe.lrange(k.failures(queue), 0, self.config.history_size - 1)
        per_queue = len(pipe) // max(len(queues), 1)
        replies = pipe.execute()
        listed: set[str] = set()
        for queue, at in zip(queues, range(0, len(replies), per_queue), strict=True):
            sids, *id_lists = replies[at:at + per_queue]
            listed.update(text(i) for ids in id_lists for i in ids)
            for sid in sids:
                pipe.lrange(k.active(queue, text(sid)), 0, -1)
        listed.update(text(i) for ids in pipe.execute() for i in ids)
        return listed

