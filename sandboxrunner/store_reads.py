"""The read side of the store: what callers, `logs`, `cron`, `top` and the dashboard read
(supervisors and their liveness, a job's fields, the cron hashes, the ids Redis lists, log
streams, each server's INFO). `Store` (store.py) inherits it: one object, one door to
Redis; this module holds no script and writes nothing.

Reads of one queue go together to the server holding it (in a cluster, the queue's node):
a read that needs the server clock (TIME) is sent with the queue's keys, so liveness is
judged by the clock that wrote the heartbeats. Reads across queues, or of keys outside any
queue, go out in pipelines, which redis-py splits by server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import Config
from .durations import Durations, histograms_of
from .job import text
from .keys import QUEUES, WAKE_MARKER, Keys, queue_of_job
from .routing import Router
from .supervision import (
    SupervisorSeen,
    live_from,
    newest_per_supervisor,
    server_ms,
    with_snapshot,
)

LISTED_PER_END = 1000  # ids read from each end of a wait list when resolving a short id


@dataclass(frozen=True)
class CronHashes:
    """The cron hashes of some queues (name -> schedule JSON, plus '@sync') and how many
    supervisors of each heartbeat within a lease, read at server_ms."""

    server_ms: int
    schedules: dict[str, dict[str, str]]
    live_supervisors: dict[str, int]


def _scored(reply: Any) -> list[tuple[Any, Any]]:
    """The member, score pairs of a raw ZRANGE ... WITHSCORES reply: pairs under RESP3, a
    flat list under RESP2."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(m, s) for m, s in reply]
    return list(zip(reply[::2], reply[1::2], strict=True))


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    """The field, value pairs of a raw HGETALL reply: a map under RESP3, a flat list
    under RESP2."""
    if isinstance(reply, dict):
        return list(reply.items())
    return list(zip(reply[::2], reply[1::2], strict=True))


@dataclass(frozen=True)
class ServerRead:
    """One master as the dashboard reads it: its address, clock, INFO and the queues whose
    keys it holds (both, unless the deployment is a cluster)."""

    address: str
    now_ms: int
    info: dict[str, Any]
    queues: tuple[str, ...]


def checked(replies: list[Any]) -> list[Any]:
    """REPLIES of a send, raising the first error reply among them."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


class StoreReads:
    """The reads of a `Store` (module docstring)."""

    config: Config
    url: str
    keys: Keys
    router: Router

    @property
    def redis(self) -> Any:
        """redis-py's client of the whole deployment, for tests and benchmarks that look
        at Redis; the package itself goes through the store's calls."""
        return self.router.client

    def supervisors_seen(self) -> list[SupervisorSeen]:
        """Every supervisor of any queue's ``sups`` set, named by its snapshot; each
        queue's are judged by the clock of the server holding the queue."""
        seen: dict[str, SupervisorSeen] = {}
        for queue in QUEUES:
            sups = self.keys.sups(queue)
            time_reply, reply = checked(self.router.send(
                sups, [("TIME",), ("ZRANGE", sups, 0, -1, "WITHSCORES")]))
            for one in newest_per_supervisor(server_ms(time_reply), [reply]):
                if one.sid not in seen or one.silent_ms < seen[one.sid].silent_ms:
                    seen[one.sid] = one
        raws = self.get_many([self.keys.supervisor(sid) for sid in seen])
        return [with_snapshot(one, raw) for one, raw in zip(seen.values(), raws, strict=True)]

    def get_many(self, keys: list[str]) -> list[Any]:
        """GET each of KEYS (in any slots), in one round trip per server."""
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return pipe.execute() if keys else []

    def server_time_ms(self, queue: str = QUEUES[0]) -> int:
        """The clock of the server holding QUEUE (its scripts' clock), in ms."""
        (reply,) = checked(self.router.send(self.keys.sups(queue), [("TIME",)]))
        return server_ms(reply)

    def job_fields(self, job_id: str, *fields: str) -> list[str]:
        key = self.keys.job(job_id)
        (values,) = checked(self.router.send(key, [("HMGET", key, *fields)]))
        return [text(v) for v in values]

    def job_view(self, job_id: str, fields: Sequence[str]) -> tuple[dict[str, str], int | None]:
        """FIELDS of JOB_ID's record (absent ones left out) and its due time (ms) in the
        delayed set (None: not there), in one round trip (get_job)."""
        queue, key = queue_of_job(job_id), self.keys.job(job_id)
        values, due = checked(self.router.send(key, [
            ("HMGET", key, *fields), ("ZSCORE", self.keys.delayed(queue), job_id)]))
        got = {name: text(v) for name, v in zip(fields, values, strict=True) if v is not None}
        return got, None if due is None else int(float(due))

    def listed_ids(self, queue: str, status: str, offset: int,
                   count: int) -> list[tuple[str, int | None]]:
        """Up to COUNT ids of QUEUE's jobs of STATUS from position OFFSET, each with its
        due ms (delayed jobs; else None), in one round trip (two for active jobs): the
        wait list from its next job, the delayed set soonest first, the leases of the
        queue's supervisors, a settled status's index newest first (list_jobs)."""
        k, first, last = self.keys, offset, offset + count - 1
        if status == "active":
            return [(i, None) for i in self._leased_ids(queue)[first:last + 1]]
        if status == "queued":
            (ids,) = checked(self.router.send(k.wait(queue), [
                ("LRANGE", k.wait(queue), -last - 1, -first - 1)]))
            return [(text(i), None) for i in reversed(ids)]
        key = k.delayed(queue) if status == "delayed" else k.done(queue, status)
        command = "ZRANGE" if status == "delayed" else "ZREVRANGE"
        (pairs,) = checked(self.router.send(key, [(command, key, first, last, "WITHSCORES")]))
        return [(text(i), int(float(s)) if status == "delayed" else None)
                for i, s in _scored(pairs)]

    def _leased_ids(self, queue: str) -> list[str]:
        """The ids in the leases of QUEUE's supervisors (each bounded by its concurrency
        and prefetch), in supervisor order."""
        k = self.keys
        (sids,) = checked(self.router.send(k.sups(queue), [("ZRANGE", k.sups(queue), 0, -1)]))
        if not sids:
            return []
        leases = checked(self.router.send(k.sups(queue), [
            ("LRANGE", k.active(queue, text(sid)), 0, -1) for sid in sids]))
        return [text(i) for ids in leases for i in reversed(ids) if text(i) != WAKE_MARKER]

    def job_views(self, queue: str, job_ids: Sequence[str],
                  fields: Sequence[str]) -> list[dict[str, str]]:
        """FIELDS of each of QUEUE's JOB_IDS (absent ones left out; {} for a job whose
        record is gone), in one round trip."""
        if not job_ids:
            return []
        replies = checked(self.router.send(self.keys.sups(queue), [
            ("HMGET", self.keys.job(i), *fields) for i in job_ids]))
        return [{f: text(v) for f, v in zip(fields, values, strict=True) if v is not None}
                for values in replies]

    def supervisor_snapshot(self, sid: str) -> dict[str, Any] | None:
        """The snapshot supervisor SID publishes each heartbeat (None: gone or unreadable)."""
        (raw,) = self.get_many([self.keys.supervisor(sid)])
        try:
            snapshot = json.loads(raw) if raw else None
        except ValueError:
            return None
        return snapshot if isinstance(snapshot, dict) else None

    def lease_ids(self, queue: str, sid: str) -> list[str]:
        """The ids in SID's active list (its lease) on QUEUE."""
        return [text(i) for i in self.redis.lrange(self.keys.active(queue, sid), 0, -1)]

    def cron_schedules(self, queues: tuple[str, ...]) -> CronHashes:
        """Every queue's cron hash and live supervisor count: one round trip per queue
        (to the server holding it, whose clock judges its supervisors); server_ms is the
        first queue's server's clock."""
        server_now: list[int] = []
        schedules: dict[str, dict[str, str]] = {}
        live: dict[str, int] = {}
        for queue in queues:
            cron, sups = self.keys.cron(queue), self.keys.sups(queue)
            time_reply, fields, beats = checked(self.router.send(cron, [
                ("TIME",), ("HGETALL", cron), ("ZRANGE", sups, 0, -1, "WITHSCORES")]))
            server_now.append(server_ms(time_reply))
            schedules[queue] = {text(k): text(v) for k, v in _pairs(fields)}
            live[queue] = live_from([time_reply, beats], self.config.lease_ms)
        return CronHashes(server_ms=server_now[0] if server_now else 0,
                          schedules=schedules, live_supervisors=live)

    def job_statuses(self, job_ids: list[str]) -> list[str]:
        """The status of each job ('' when it has no record), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "status")
        return [text(s) for s in pipe.execute()] if job_ids else []

    # -- finding a job from the start of its id (the short ids `top` shows) -----------
    def listed_job_ids(self, queues: Sequence[str] = QUEUES) -> set[str]:
        """The ids Redis lists anyway, in two round trips and no key scan: the jobs each
        supervisor holds (its lease), both ends of the wait list, those delayed (or waiting
        for a retry) or throttled, and each queue's history of settled and failed jobs."""
        k, end = self.keys, LISTED_PER_END - 1
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.zrange(k.sups(queue), 0, -1)
            pipe.lrange(k.wait(queue), 0, end)
            pipe.lrange(k.wait(queue), -LISTED_PER_END, -1)
            pipe.zrange(k.delayed(queue), 0, end)
            pipe.zrange(k.throttled(queue), 0, end)
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

    def job_log_entries(self, job_id: str, after: str, count: int) -> list[Any]:
        """Entries (id, {field: value}) of JOB_ID's log stream after stream id AFTER
        ('-': from the start), oldest first."""
        start = "-" if after == "-" else f"({after}"
        key = self.keys.job_log(job_id)
        (entries,) = checked(self.router.send(key, [("XRANGE", key, start, "+", "COUNT",
                                                      count)]))
        return [(entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))
                for entry_id, flat in entries or []]

    # -- the dashboard (snapshot.py) ---------------------------------------------------
    def read_durations(self, queues: Sequence[str] = QUEUES) -> Durations:
        """The job duration histograms of QUEUES (durations.py): one HGETALL per queue,
        in one round trip per server, each bounded by durations.NAMES_MAX names."""
        replies = self.read_many([("hgetall", (self.keys.durations(q),), {}) for q in queues])
        histograms = []
        for queue, reply in zip(queues, replies, strict=True):
            if isinstance(reply, dict):  # an error in its place: a key of the wrong type
                histograms += histograms_of(queue, {text(f): v for f, v in reply.items()})
        return Durations(tuple(histograms))

    def read_many(self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        """Run read-only redis-py calls (method name, args, kwargs), each on the server
        holding its key: one round trip per server, an error in place of its reply."""
        if not calls:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name, args, kwargs in calls:
            getattr(pipe, name)(*args, **kwargs)
        return list(pipe.execute(raise_on_error=False))

    def servers(self) -> list[ServerRead]:
        """Each master: its clock and INFO, asked one server at a time (never in a
        pipeline: a cluster's pipeline routes by key), and the queues it holds."""
        holders = {queue: self.router.address_of(self.keys.wait(queue)) for queue in QUEUES}
        out = []
        for address, client in self.router.masters():
            seconds, micros = client.time()
            out.append(ServerRead(
                address=address if isinstance(address, str) else f"{address[0]}:{address[1]}",
                now_ms=int(seconds) * 1000 + int(micros) // 1000, info=dict(client.info()),
                queues=tuple(q for q, holder in holders.items() if holder == address)))
        return out
