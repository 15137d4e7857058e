"""The records of one `top` snapshot, and the pure functions that build them from raw
Redis replies: tolerant decoding, the per-second rate series, a supervisor's state, its
heartbeat age and its running jobs' elapsed time (clocks: snapshot.py's docstring), how
its leased jobs split into running, prefetched and orphaned, one log line.

Nothing here talks to Redis: snapshot.py reads the replies and hands them over. The JSON
shape of `Snapshot.to_json` is documented in snapshot.py's docstring. A web dashboard
reuses these records and derivations; they are the one place each rule is stated:

Supervisor state, from the age of its last heartbeat on the Redis server's clock
(`supervisor_state`): ``live``; ``late`` past half its lease without a heartbeat (the
silence heartbeat.lua also treats as a sign of trouble); ``gone`` once its lease lapsed,
whether or not another supervisor is there to take its jobs back, or once its snapshot
expired. A gone supervisor's uptime stops at its last heartbeat, and it runs nothing.

Leased jobs (`split_lease`): a queue's ``active`` jobs are those in the supervisors'
leases, read live, split three ways so that every count shown adds up:
  running     being run: in process mode at most one per child of the pool (a pool
              starts a job as soon as a child is free), in thread mode all of them
              (a thread supervisor claims no more than its free slots);
  prefetched  claimed by a process pool ahead of a free child: the backlog, which
              waits in the supervisor's memory (its deadline starts when a child takes
              it) and which no other supervisor can take meanwhile;
  orphaned    in the lease of a gone supervisor: a live supervisor of the queue takes
              them back (runs them again) at its next heartbeat, or the next to start.
A supervisor's ``busy`` and ``prefetched`` are the sums of its queues' splits, and a
queue's are the sums over its supervisors, so the queue line, the supervisor line and
``running`` agree. The list of running jobs comes from the supervisors' heartbeats, so a
job started since the last one is counted before it is listed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

RATE_WINDOW_S = 60
MAX_TEXT_CHARS = 500  # a message or log line is cut here: the screen shows one line


@dataclass(frozen=True)
class QueueStats:
    name: str
    waiting: int
    delayed: int  # jobs waiting for their delay, run_at or retry's backoff
    active: int  # leased: running + prefetched + orphaned
    running: int
    prefetched: int
    orphaned: int
    enqueued: int
    completed: int
    failed: int
    retried: int
    stalled: int  # taken back from a supervisor that died
    handed_back: int  # handed back by a supervisor stopping at the end of its grace period
    jobs_per_s: float
    rate_per_s: tuple[int, ...]  # completions per second over the last minute, oldest first
    oldest_waiting_ms: int | None
    supervisors: int  # supervisors serving it, live or late (not gone)
    paused: bool = False  # no supervisor claims its jobs until it is resumed
    throttled: int = 0  # jobs held back by their rate limit


@dataclass(frozen=True)
class ChildInfo:
    queue: str
    pid: int
    state: str
    job_id: str | None
    job_name: str | None
    cpu_percent: float
    rss_bytes: int
    jobs_served: int


@dataclass(frozen=True)
class SupervisorInfo:
    sid: str
    state: str  # live, late or gone
    host: str
    pid: int
    mode: str
    queues: tuple[str, ...]
    uptime_ms: int
    cpu_percent: float
    rss_bytes: int
    heartbeat_age_ms: int
    capacity: int
    busy: int  # jobs running
    prefetched: int
    orphaned: int  # jobs left in its lease when it is gone
    children: tuple[ChildInfo, ...]


@dataclass(frozen=True)
class RunningJobInfo:
    id: str
    name: str
    queue: str
    sid: str
    host: str
    supervisor_pid: int
    worker: str
    elapsed_ms: int
    timeout_ms: int
    progress: float | None = None  # its latest ctx.progress (0..1), None: never reported
    progress_message: str | None = None


@dataclass(frozen=True)
class FailureInfo:
    id: str
    queue: str
    name: str
    error_type: str
    error_kind: str
    message: str
    ended_ms: int | None


@dataclass(frozen=True)
class CronInfo:
    queue: str
    job: str
    pattern: str
    tz: str
    next_ms: int | None
    last_tick_ms: int | None
    last_outcome: str | None
    last_job_id: str
    runs: int
    skips: int
    error: str
    manual_runs: int = 0  # runs by hand (run_cron_now), not ticks
    last_manual_ms: int | None = None
    last_manual_job_id: str = ""


@dataclass(frozen=True)
class LogLine:
    id: str
    ts_ms: int
    level: str
    job_id: str
    source: str
    msg: str


SAFE_POLICY = "noeviction"  # the maxmemory-policy that never evicts our keys


@dataclass(frozen=True)
class RedisMemory:
    """Redis's memory use and limit, from INFO memory."""

    used_bytes: int
    maxmemory_bytes: int  # 0: no limit
    policy: str  # maxmemory-policy; "" when the server did not say

    @classmethod
    def from_info(cls, info: Any) -> RedisMemory:
        info = info if isinstance(info, dict) else {}
        return cls(as_int(info.get("used_memory")), as_int(info.get("maxmemory")),
                   str(info.get("maxmemory_policy") or ""))

    @classmethod
    def combined(cls, infos: list[Any]) -> RedisMemory:
        """The deployment's memory from each master's INFO: use and limits summed; the
        policy of a master that may evict if any does (one such master loses jobs)."""
        each = [cls.from_info(info) for info in infos]
        policies = [m.policy for m in each if m.may_evict] or [m.policy for m in each]
        return cls(sum(m.used_bytes for m in each), sum(m.maxmemory_bytes for m in each),
                   policies[0] if policies else "")

    @property
    def may_evict(self) -> bool:
        """Whether a full Redis drops keys (ours among them) instead of refusing writes."""
        return self.policy not in ("", SAFE_POLICY)


@dataclass(frozen=True)
class NodeInfo:
    """A master of the deployment (each of a cluster's; the one of a single server or
    behind Sentinels) and the queues it holds."""

    address: str
    role: str
    version: str
    queues: tuple[str, ...]
    clients: int
    used_memory_bytes: int
    maxmemory_bytes: int  # 0: no limit
    maxmemory_policy: str
    ops_per_s: int
    replicas: int


@dataclass(frozen=True)
class Snapshot:
    redis_url: str  # without its password
    redis_version: str
    server_time_ms: int
    queues: tuple[QueueStats, ...]
    supervisors: tuple[SupervisorInfo, ...]
    running: tuple[RunningJobInfo, ...]
    failures: tuple[FailureInfo, ...]
    cron: tuple[CronInfo, ...]
    logs: tuple[LogLine, ...]
    nodes: tuple[NodeInfo, ...] = ()
    redis_memory: RedisMemory = RedisMemory(0, 0, "")  # its maxmemory-policy: preflight.py

    def live_supervisors(self) -> int:
        return sum(1 for s in self.supervisors if s.state != "gone")

    def totals(self) -> dict[str, Any]:
        return {
            "waiting": sum(q.waiting for q in self.queues),
            "active": sum(q.active for q in self.queues),
            "running": sum(q.running for q in self.queues),
            "prefetched": sum(q.prefetched for q in self.queues),
            "orphaned": sum(q.orphaned for q in self.queues),
            "completed": sum(q.completed for q in self.queues),
            "failed": sum(q.failed for q in self.queues),
            "jobs_per_s": round(sum(q.jobs_per_s for q in self.queues), 3),
            "supervisors": self.live_supervisors(),
        }

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape (snapshot.py's docstring)."""
        queues = {}
        for q in self.queues:
            row = asdict(q)
            del row["name"]
            row["rate_per_s"] = list(q.rate_per_s)
            queues[q.name] = row
        return {
            "redis": {"url": self.redis_url, "version": self.redis_version,
                      "maxmemory_policy": self.redis_memory.policy,
                      "maxmemory_bytes": self.redis_memory.maxmemory_bytes,
                      "used_memory_bytes": self.redis_memory.used_bytes,
                      "nodes": [asdict(n) for n in self.nodes]},
            "server_time_ms": self.server_time_ms,
            "totals": self.totals(),
            "queues": queues,
            "supervisors": [asdict(s) for s in self.supervisors],
            "running": [asdict(r) for r in self.running],
            "failures": [asdict(f) for f in self.failures],
            "cron": [asdict(c) for c in self.cron],
            "logs": [asdict(line) for line in self.logs],
        }


# -- tolerant decoding: anything in Redis may have been written by hand ---------------------


def as_text(value: Any) -> str:
    if value is None or isinstance(value, Exception):
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def as_int(value: Any, default: int = 0) -> int:
    try:
        return int(float(as_text(value) if isinstance(value, bytes) else value))
    except (TypeError, ValueError, OverflowError):
        return default


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def cut_text(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…"


def rate_series(raw: dict[Any, Any], now_s: int) -> tuple[int, ...]:
    """The ring's ``second:count`` slots as counts for the last RATE_WINDOW_S seconds."""
    counts = [0] * RATE_WINDOW_S
    for value in raw.values():
        second, _, count = as_text(value).partition(":")
        age = now_s - as_int(second, -1)
        if 0 <= age < RATE_WINDOW_S:
            counts[RATE_WINDOW_S - 1 - age] = as_int(count)
    return tuple(counts)


def _sid_parts(sid: str) -> tuple[str, int]:
    """Host and pid from a supervisor id ``host-pid-hex`` (a host may contain dashes)."""
    parts = sid.rsplit("-", 2)
    return (parts[0], as_int(parts[1])) if len(parts) == 3 else (sid, 0)


def supervisor_state(age_ms: int, lease_ms: int) -> str:
    """live, late or gone for a last heartbeat AGE_MS old (server clock); see the top."""
    if age_ms > lease_ms:
        return "gone"
    return "late" if age_ms > lease_ms // 2 else "live"


@dataclass(frozen=True)
class LeaseSplit:
    """One supervisor's leased jobs of one queue, or sums of them (see the top)."""

    running: int = 0
    prefetched: int = 0
    orphaned: int = 0

    def __add__(self, other: LeaseSplit) -> LeaseSplit:
        return LeaseSplit(self.running + other.running, self.prefetched + other.prefetched,
                          self.orphaned + other.orphaned)

    @property
    def active(self) -> int:
        return self.running + self.prefetched + self.orphaned


def split_lease(leased: int, capacity: int | None, state: str) -> LeaseSplit:
    """LEASED jobs of a supervisor in STATE whose executor runs CAPACITY at once (None:
    unknown, as for a supervisor whose snapshot was not read)."""
    if state == "gone":
        return LeaseSplit(orphaned=leased)
    running = leased if capacity is None else min(leased, capacity)
    return LeaseSplit(running=running, prefetched=leased - running)


def gone_supervisor(sid: str, age_ms: int, splits: dict[str, LeaseSplit]) -> SupervisorInfo:
    """A supervisor known only by its id (its snapshot expired): gone."""
    host, pid = _sid_parts(sid)
    return SupervisorInfo(sid=sid, state="gone", host=host, pid=pid, mode="", queues=(),
                          uptime_ms=0, cpu_percent=0.0, rss_bytes=0, heartbeat_age_ms=age_ms,
                          capacity=0, busy=0, prefetched=0,
                          orphaned=sum(split.orphaned for split in splits.values()),
                          children=())


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _executors(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = snap.get("executors")
    if not isinstance(raw, dict):
        return {}
    return {str(q): ex for q, ex in raw.items() if isinstance(ex, dict)}


def _children(executors: dict[str, dict[str, Any]]) -> tuple[ChildInfo, ...]:
    return tuple(
        ChildInfo(queue=q, pid=as_int(c.get("pid")), state=str(c.get("state", "")),
                  job_id=c.get("job_id"), job_name=c.get("job_name"),
                  cpu_percent=_float(c.get("cpu_percent")), rss_bytes=as_int(c.get("rss_bytes")),
                  jobs_served=as_int(c.get("jobs_served")))
        for q, ex in executors.items() for c in _dicts(ex.get("children")))


def _snapshot_age_ms(snap: dict[str, Any], pttl: int, now_ms: int) -> int:
    # PTTL gives the snapshot's age on the server's clock; a supervisor that publishes no
    # ttl_ms leaves only a comparison of two hosts' clocks
    ttl_ms = as_int(snap.get("ttl_ms"))
    return max(0, ttl_ms - pttl if ttl_ms and pttl >= 0
               else now_ms - as_int(snap.get("heartbeat_ms")))


def decode_supervisor(sid: str, snap: dict[str, Any], pttl: int, now_ms: int,
                      default_lease_ms: int, leased: dict[str, int],
                      ) -> tuple[SupervisorInfo, list[RunningJobInfo], dict[str, LeaseSplit]]:
    """A supervisor from its published snapshot and LEASED (queue -> jobs in its lease,
    read live): its record, the jobs it runs, and its leased jobs split per queue."""
    age_ms = _snapshot_age_ms(snap, pttl, now_ms)
    state = supervisor_state(age_ms, as_int(snap.get("lease_ms")) or default_lease_ms)
    executors = _executors(snap)
    splits = {q: split_lease(n, as_int(executors[q].get("capacity")) if q in executors
                             else None, state) for q, n in leased.items()}
    total = sum(splits.values(), LeaseSplit())
    beat_ms = as_int(snap.get("heartbeat_ms"))
    started_ms = int(_float(snap.get("started_at")) * 1000)
    host, pid = str(snap.get("host", "")), as_int(snap.get("pid"))
    gone = state == "gone"
    info = SupervisorInfo(
        sid=sid, state=state, host=host, pid=pid, mode=str(snap.get("mode", "")),
        queues=tuple(str(q) for q in snap.get("queues") or ()),
        # a gone supervisor's uptime stops at its last heartbeat
        uptime_ms=max(0, beat_ms - started_ms + (0 if gone else age_ms)),
        cpu_percent=_float(snap.get("cpu_percent")), rss_bytes=as_int(snap.get("rss_bytes")),
        heartbeat_age_ms=age_ms,
        capacity=sum(as_int(ex.get("capacity")) for ex in executors.values()),
        busy=total.running, prefetched=total.prefetched, orphaned=total.orphaned,
        children=() if gone else _children(executors),  # they died with it
    )
    # started_at and heartbeat_ms are both the supervisor's clock: skew cancels out
    jobs = [] if gone else [
        RunningJobInfo(id=str(r.get("id", "")), name=str(r.get("name", "")),
                       queue=str(r.get("queue", "")), sid=sid, host=host, supervisor_pid=pid,
                       worker=str(r.get("worker", "")), timeout_ms=as_int(r.get("timeout_ms")),
                       elapsed_ms=max(0, beat_ms - int(_float(r.get("started_at")) * 1000)
                                      + age_ms), **_progress_of(r))
        for r in _dicts(snap.get("running"))
    ]
    return info, jobs, splits


def _progress_of(row: dict[str, Any]) -> dict[str, Any]:
    """The progress fields of a running job's row (none when it never reported)."""
    fraction = row.get("progress")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        return {}
    message = row.get("progress_message")
    return {"progress": min(1.0, max(0.0, float(fraction))),
            "progress_message": message if isinstance(message, str) else None}


def server_version(info: dict[str, Any]) -> str:
    """``valkey 9.0.0`` or ``redis 7.0.15``, from a server's INFO."""
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version', '?')}"


def decode_node(address: str, info: dict[str, Any], queues: tuple[str, ...]) -> NodeInfo:
    """A master's record from its INFO (default sections)."""
    return NodeInfo(address=address, role=str(info.get("role", "master")),
                    version=server_version(info), queues=queues,
                    clients=as_int(info.get("connected_clients")),
                    used_memory_bytes=as_int(info.get("used_memory")),
                    maxmemory_bytes=as_int(info.get("maxmemory")),
                    maxmemory_policy=str(info.get("maxmemory_policy") or ""),
                    ops_per_s=as_int(info.get("instantaneous_ops_per_sec")),
                    replicas=as_int(info.get("connected_slaves")))


def decode_log_line(entry: Any) -> LogLine:
    entry_id, fields = entry
    fields = {as_text(f): v for f, v in (fields or {}).items()}
    try:
        line = json.loads(as_text(fields.get("line")))
    except ValueError:
        line = None
    if not isinstance(line, dict):
        line = {"msg": as_text(fields.get("line")), "level": "info"}
    msg = str(line.get("msg", ""))
    if isinstance(line.get("err"), dict):
        msg += f" [{line['err'].get('type', 'Error')}: {line['err'].get('message', '')}]"
    if "data" in line:
        msg += " " + json.dumps(line["data"], default=str)
    entry_text = as_text(entry_id)
    ts_ms = int(_float(line.get("ts")) * 1000) or as_int(entry_text.partition("-")[0])
    return LogLine(id=entry_text, ts_ms=ts_ms, level=str(line.get("level", "info")),
                   job_id=as_text(fields.get("job")), source=str(line.get("source", "")),
                   msg=cut_text(msg.replace("\n", " ")))
