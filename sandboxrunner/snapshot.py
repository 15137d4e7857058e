"""One read-only, bounded snapshot of a deployment: everything `sandboxrunner top` shows.

`SnapshotReader.read()` costs at most five round trips per server however many jobs ever
ran, writes nothing and scans nothing (no KEYS/SCAN): every read is a fixed key or a
bounded range. It reads through the store (store.py routes each pipelined read to the
server holding its key, in a cluster too).
This module owns the reading (the rounds below) and puts the snapshot together; the
records and the JSON shape of `Snapshot.to_json` (what ``sandboxrunner top --json``
prints) are in snapshot_records.py, and the pure functions that turn raw replies into
them (rates, ages, supervisor states, elapsed times, log lines) in snapshot_decode.py.
`Snapshot` is re-exported.

  0. TIME and INFO of each master, one server at a time (a pipeline routes by key): the
     first master's clock is the snapshot's (``server_time_ms``; a cluster's masters agree
     to within their hosts' clock skew), and each master is shown with its queues and
     its memory (maxmemory and its policy: anything but noeviction may evict jobs);
  1. one pipeline: the newest MAX_SUPERVISORS entries of the
     supervisors index, the last LOG_TAIL lines of PREFIX:logs, and per queue: LLEN and
     the two oldest entries of the wait list (a wake marker, put only onto an empty list,
     can be the oldest), ZCARD of the delayed set, EXISTS of the paused flag, ZCARD
     of the throttled set, the stats and rate hashes, the first FAILURES_SHOWN
     failure ids and the queue's ``sups`` zset (newest MAX_SUPERVISORS);
  2. one pipeline: GET + PTTL of each indexed supervisor's snapshot, LLEN and LRANGE
     (first MAX_ACTIVE_IDS) of the active list of each supervisor in a queue's ``sups``,
     HGET enq of each queue's oldest waiting job, HMGET name/error/end of each failure;
  3-4. ``cron.list_schedules``: every queue's cron hash, then each last run's status.

Running jobs come from the supervisors' snapshots (published each heartbeat), minus those
no longer in their supervisor's active list: a job that settled since the last heartbeat
is not shown as running.

Clocks: ages come from the Redis server clock (TIME, PTTL). A running job's elapsed time
is measured on its supervisor's own clock (its start and the snapshot's heartbeat) plus
the snapshot's age from PTTL, so clock skew between hosts does not distort it.

Supervisor states (live, late, gone: by the server clock) and the split of each queue's
leased jobs into running, prefetched and orphaned are derived in snapshot_decode.py,
whose docstring states the rules. A gone supervisor is one whose lease lapsed or whose
snapshot expired (it died without removing itself): it is listed while jobs are left in
its lease, and otherwise for GONE_SHOWN_MS after its last heartbeat, then left out; the
index itself is never modified here.
"""

from __future__ import annotations

from typing import Any

from .config import Config, redact_url
from .cron_state import list_schedules
from .durations import Durations
from .job_errors import ErrorInfo
from .keys import QUEUES, Keys
from .redis_errors import REDIS_OR_SOCKET_ERRORS, translate
from .snapshot_decode import (
    RATE_WINDOW_S,
    LeaseSplit,
    decode_log_line,
    decode_node,
    decode_supervisor,
    gone_supervisor,
    has_wake_marker,
    json_object,
    last_beats,
    leased_by_sid,
    oldest_job,
    rate_series,
    server_version,
    split_lease,
    supervisor_state,
)
from .snapshot_records import (
    CronInfo,
    FailureInfo,
    QueueStats,
    RedisMemory,
    RunningJobInfo,
    Snapshot,
    SupervisorInfo,
    as_int,
    as_text,
    cut_text,
)
from .store import Store

__all__ = ["Snapshot", "SnapshotReader"]

MAX_SUPERVISORS = 100
MAX_ACTIVE_IDS = 1000  # per supervisor and queue; beyond it running jobs go unfiltered
FAILURES_SHOWN = 10
LOG_TAIL = 20
GONE_SHOWN_MS = 60_000
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0


# -- tolerant decoding: anything in Redis may have been written by hand ---------------------


def _ok(value: Any, empty: Any) -> Any:
    """A pipeline reply, or EMPTY when that one command failed (e.g. a wrong-type key)."""
    return empty if isinstance(value, Exception) or value is None else value


def _job_key(keys: Keys, job_id: str) -> str | None:
    if not job_id:
        return None
    try:
        return keys.job(job_id)
    except ValueError:
        return None  # a malformed id pushed by hand: nothing to look up


class _Batch:
    """Reads to run together; `add` returns where its reply will be, `reply` reads it
    after `run` (through the store: one round trip per server)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._replies: list[Any] = []

    def add(self, command: str, *args: Any, **kwargs: Any) -> int:
        self._calls.append((command, args, kwargs))
        return len(self._calls) - 1

    def run(self) -> None:
        self._replies = self._store.read_many(self._calls)

    def reply(self, at: int, empty: Any = None) -> Any:
        """The reply of command AT, or EMPTY when that command failed (a wrong-type key)."""
        return _ok(self._replies[at], empty)


class SnapshotReader:
    """Reads snapshots from one Redis; keeps its connections between reads."""

    def __init__(self, config: Config, url: str, queues: tuple[str, ...] = QUEUES) -> None:
        self.config = config
        self.url = url
        self.queues = queues
        self.keys = Keys(config.key_prefix)
        self._store = Store(config, url, socket_timeout=READ_TIMEOUT_S,  # connects lazily
                            connect_timeout=CONNECT_TIMEOUT_S)

    def close(self) -> None:
        self._store.close()

    def read(self) -> Snapshot:
        """One snapshot; our error (redis_errors.py: address without password) if Redis
        fails."""
        try:
            return self._read()
        except REDIS_OR_SOCKET_ERRORS as exc:
            raise translate(exc, self.url, "read the dashboard", self.keys.prefix) from exc

    def read_durations(self) -> Durations:
        """The job duration histograms of the queues read (durations.py, for /metrics):
        one HGETALL per queue; our error if Redis fails, as `read`."""
        try:
            return self._store.read_durations(self.queues)
        except REDIS_OR_SOCKET_ERRORS as exc:
            raise translate(exc, self.url, "read the job durations", self.keys.prefix) from exc

    def _read(self) -> Snapshot:
        first = self._first_round()
        now_ms = first["now_ms"]
        second = self._second_round(first)
        supervisors, running, splits = self._supervisors(first, second, now_ms)
        if second["active_ids"] is not None:
            running = tuple(r for r in running if r.id in second["active_ids"])
        return Snapshot(
            redis_url=redact_url(self.url),
            redis_version=first["version"],
            redis_memory=first["memory"],
            server_time_ms=now_ms,
            queues=tuple(self._queue(q, first["queues"][q], second, splits[q], supervisors,
                                     now_ms) for q in self.queues),
            supervisors=supervisors,
            running=running,
            failures=self._failures(second["failures"]),
            cron=self._cron(),
            logs=tuple(reversed([decode_log_line(entry) for entry in first["logs"]])),
            nodes=first["nodes"],
        )

    def _first_round(self) -> dict[str, Any]:
        servers = self._store.servers()
        k, batch = self.keys, _Batch(self._store)
        at_index = batch.add("zrevrange", k.supervisors(), 0, MAX_SUPERVISORS - 1,
                             withscores=True)
        at_logs = batch.add("xrevrange", k.logs(), count=LOG_TAIL)
        at_queues = {q: {
            "waiting": batch.add("llen", k.wait(q)),
            "oldest_ids": batch.add("lrange", k.wait(q), -2, -1),
            "delayed": batch.add("zcard", k.delayed(q)),
            "paused": batch.add("exists", k.paused(q)),
            "throttled": batch.add("zcard", k.throttled(q)),
            "stats": batch.add("hgetall", k.stats(q)),
            "rate": batch.add("hgetall", k.rate(q)),
            "failure_ids": batch.add("lrange", k.failures(q), 0, FAILURES_SHOWN - 1),
            "sups": batch.add("zrevrange", k.sups(q), 0, MAX_SUPERVISORS - 1, withscores=True),
        } for q in self.queues}
        batch.run()
        return {
            "now_ms": servers[0].now_ms,
            "version": server_version(servers[0].info),
            "nodes": tuple(decode_node(s.address, s.info, s.queues) for s in servers),
            "memory": RedisMemory.combined([s.info for s in servers]),
            "index": [(as_text(sid), int(score)) for sid, score in batch.reply(at_index, [])],
            "logs": batch.reply(at_logs, []),
            "queues": {q: {name: batch.reply(at) for name, at in ats.items()}
                       for q, ats in at_queues.items()},
        }

    def _second_round(self, first: dict[str, Any]) -> dict[str, Any]:
        k, batch = self.keys, _Batch(self._store)
        snapshots = [(sid, score, batch.add("get", k.supervisor(sid)),
                      batch.add("pttl", k.supervisor(sid))) for sid, score in first["index"]]
        active: dict[str, list[tuple[str, int, int]]] = {}
        oldest: dict[str, int] = {}
        failures: list[tuple[str, str, int | None]] = []
        for q, raw in first["queues"].items():
            active[q] = [(as_text(sid), batch.add("llen", k.active(q, as_text(sid))),
                          batch.add("lrange", k.active(q, as_text(sid)), 0, MAX_ACTIVE_IDS - 1))
                         for sid, _ in raw["sups"] or ()]
            oldest_key = _job_key(k, oldest_job(raw["oldest_ids"]))
            if oldest_key:
                oldest[q] = batch.add("hget", oldest_key, "enq")
            for job_id in map(as_text, raw["failure_ids"] or ()):
                job_key = _job_key(k, job_id)
                at = batch.add("hmget", job_key, ["name", "error", "end"]) if job_key else None
                failures.append((q, job_id, at))
        batch.run()
        return {
            "snapshots": [(sid, score, batch.reply(got), as_int(batch.reply(ttl, -2), -2))
                          for sid, score, got, ttl in snapshots],
            # sid -> queue -> jobs in its lease
            "leased": leased_by_sid({q: [(sid, as_int(batch.reply(n, 0))) for sid, n, _ in at]
                                      for q, at in active.items()}),
            # None: some list was longer than we read, so membership can't be decided
            "active_ids": None if any(as_int(batch.reply(n, 0)) > MAX_ACTIVE_IDS
                                      for at in active.values() for _, n, _ in at)
            else {as_text(i) for at in active.values() for _, _, ids in at
                  for i in batch.reply(ids, [])},
            "oldest": {q: as_int(batch.reply(i, 0)) or None for q, i in oldest.items()},
            "failures": [(q, job_id, batch.reply(at, [None] * 3) if at is not None
                          else [None] * 3) for q, job_id, at in failures],
        }

    def _queue(self, q: str, raw: dict[str, Any], second: dict[str, Any], split: LeaseSplit,
               supervisors: tuple[SupervisorInfo, ...], now_ms: int) -> QueueStats:
        stats = {as_text(f): as_int(v) for f, v in (raw["stats"] or {}).items()}
        series = rate_series(raw["rate"] or {}, now_ms // 1000)
        enq = second["oldest"].get(q)
        return QueueStats(
            name=q,
            waiting=as_int(raw["waiting"]) - has_wake_marker(raw["oldest_ids"]),
            delayed=as_int(raw["delayed"]),
            active=split.active,
            running=split.running,
            prefetched=split.prefetched,
            orphaned=split.orphaned,
            enqueued=stats.get("enqueued", 0),
            completed=stats.get("completed", 0),
            failed=stats.get("failed", 0),
            retried=stats.get("retried", 0),
            stalled=stats.get("stalled", 0),
            handed_back=stats.get("handed_back", 0),
            jobs_per_s=round(sum(series) / RATE_WINDOW_S, 3),
            rate_per_s=series,
            oldest_waiting_ms=max(0, now_ms - enq) if enq else None,
            supervisors=sum(1 for s in supervisors if s.state != "gone" and q in s.queues),
            paused=bool(as_int(raw["paused"])),
            throttled=as_int(raw["throttled"]),
        )

    def _supervisors(self, first: dict[str, Any], second: dict[str, Any], now_ms: int,
                     ) -> tuple[tuple[SupervisorInfo, ...], tuple[RunningJobInfo, ...],
                                dict[str, LeaseSplit]]:
        """Every supervisor to show, the jobs they run, and each queue's leased jobs split
        (snapshot_decode.py's docstring): from the snapshots of the indexed ones, and
        from the queues' ``sups`` (server clock) for those whose snapshot is not there."""
        leased: dict[str, dict[str, int]] = second["leased"]
        last_beat = last_beats(first["queues"])
        shown: list[SupervisorInfo] = []
        running: list[RunningJobInfo] = []
        splits = {q: LeaseSplit() for q in self.queues}
        for sid, score, raw, pttl in second["snapshots"]:
            mine = leased.get(sid, {})
            snap = json_object(raw)
            if snap is None:  # expired: it stopped heartbeating three leases ago
                per_queue = {q: split_lease(n, None, "gone") for q, n in mine.items()}
                info = gone_supervisor(sid, max(0, now_ms - last_beat.get(sid, score)),
                                       per_queue)
            else:
                info, jobs, per_queue = decode_supervisor(sid, snap, pttl, now_ms,
                                                          self.config.lease_ms, mine)
                running += jobs
            self._add(splits, per_queue)
            if info.state != "gone" or info.orphaned or info.heartbeat_age_ms <= GONE_SHOWN_MS:
                shown.append(info)
        indexed = {sid for sid, *_ in second["snapshots"]}
        for sid, mine in leased.items():
            if sid not in indexed:
                shown += self._unindexed(sid, mine, now_ms - last_beat.get(sid, now_ms), splits)
        # a stable order, so rows don't jump between refreshes; the gone ones last
        shown.sort(key=lambda s: (s.state == "gone", s.host, s.pid, s.sid))
        running.sort(key=lambda r: (-r.elapsed_ms / max(r.timeout_ms, 1), r.id))
        return tuple(shown), tuple(running), splits

    def _unindexed(self, sid: str, leased: dict[str, int], age_ms: int,
                   splits: dict[str, LeaseSplit]) -> list[SupervisorInfo]:
        """A supervisor serving a queue but not among those read from the index: its jobs
        are counted (by its last heartbeat on the queues, server clock), and it is shown
        if it is gone with jobs left in its lease."""
        state = supervisor_state(max(0, age_ms), self.config.lease_ms)
        per_queue = {q: split_lease(n, None, state) for q, n in leased.items()}
        self._add(splits, per_queue)
        if state == "gone" and any(leased.values()):
            return [gone_supervisor(sid, max(0, age_ms), per_queue)]
        return []

    @staticmethod
    def _add(splits: dict[str, LeaseSplit], per_queue: dict[str, LeaseSplit]) -> None:
        for q, split in per_queue.items():
            if q in splits:
                splits[q] += split

    def _failures(self, rows: list[tuple[str, str, list[Any]]]) -> tuple[FailureInfo, ...]:
        out = []
        for queue, job_id, (name, error, end) in rows:
            if error is None and name is None:
                info = ErrorInfo(kind="", type="", message="(record expired or malformed id)")
            else:
                info = ErrorInfo.from_json(as_text(error) or "{}")
            first_line = info.message.strip().splitlines()[0] if info.message.strip() else ""
            out.append(FailureInfo(id=job_id, queue=queue, name=as_text(name),
                                   error_type=info.type, error_kind=info.kind,
                                   message=cut_text(first_line), ended_ms=as_int(end) or None))
        out.sort(key=lambda f: f.ended_ms or 0, reverse=True)
        return tuple(out[:FAILURES_SHOWN])

    def _cron(self) -> tuple[CronInfo, ...]:
        return tuple(
            CronInfo(queue=r["queue"], job=r["job"], pattern=r["pattern"], tz=r["tz"],
                     next_ms=r["next_ms"], last_tick_ms=r["last_tick_ms"],
                     last_outcome=r["last_outcome"], last_job_id=r["last_job_id"],
                     runs=r["runs"], skips=r["skips"], error=cut_text(r["error"]),
                     manual_runs=r["manual_runs"], last_manual_ms=r["last_manual_ms"],
                     last_manual_job_id=r["last_manual_job_id"])
            for r in list_schedules(self._store, self.queues)
        )
