"""The records of one snapshot of a deployment (what `top` and the web dashboard show),
and the JSON shape `Snapshot.to_json` gives them. Nothing here talks to Redis: snapshot.py
reads the replies and snapshot_decode.py turns them into these records. The tolerant
decoding of one value (anything in Redis may have been written by hand) is here, as the
records' own decoding uses it.

JSON shape (`Snapshot.to_json`, what ``sandboxrunner top --json`` prints). Times are epoch
ms, durations ms; lists are bounded as noted:

  {"redis": {"url": "redis://:***@host:6379/0", "version": "valkey 9.0.0",
             "maxmemory_policy": "noeviction",   # anything else may evict jobs (any master's)
             "maxmemory_bytes": int, "used_memory_bytes": int,   # summed over masters; 0: none
             "nodes": [{"address", "role", "version", "queues": [..], "clients",
                        "used_memory_bytes", "maxmemory_bytes", "maxmemory_policy",
                        "ops_per_s", "replicas"}]},  # each master
   "server_time_ms": int,
   "totals": {"waiting", "active", "running", "prefetched", "orphaned", "completed",
              "failed", "jobs_per_s", "supervisors"},
   "queues": {"default": {"waiting", "delayed", "active", "running", "prefetched",
                          "orphaned", "enqueued", "completed",
                          "failed", "retried", "stalled", "handed_back", "jobs_per_s",
                          "rate_per_s": [60 ints, oldest first],
                          "oldest_waiting_ms": int | null, "supervisors": int,
                          "paused": bool, "throttled": int},
              "priority": {...}},
   "supervisors": [{"sid", "state", "host", "pid", "mode", "queues": [..], "uptime_ms",
                    "cpu_percent", "rss_bytes", "heartbeat_age_ms", "capacity",
                    "busy", "prefetched", "orphaned",      # busy: jobs running
                    "children": [{"queue", "pid", "state", "job_id", "job_name",
                                  "cpu_percent", "rss_bytes", "jobs_served"}]}],
   "running": [{"id", "name", "queue", "sid", "host", "supervisor_pid", "worker",
                "elapsed_ms", "timeout_ms"}],   # most of its timeout used first;
                                                  # worker: "thread" or a child's pid
   "failures": [{"id", "queue", "name", "error_type", "error_kind", "message",
                 "ended_ms"}],                           # newest first, snapshot.FAILURES_SHOWN
   "cron": [{"queue", "job", "pattern", "tz", "next_ms", "last_tick_ms", "last_outcome",
             "last_job_id", "runs", "skips", "error", "manual_runs", "last_manual_ms",
             "last_manual_job_id"}],
   "logs": [{"id", "ts_ms", "level", "job_id", "source", "msg"}]}  # snapshot.LOG_TAIL, oldest first

A queue's ``waiting`` leaves out a wake marker (keys.WAKE_MARKER); ``stalled`` counts jobs
taken back from supervisors that died, ``handed_back`` those a stopping supervisor handed
back at the end of its grace period. A queue's ``active`` counts leased jobs (claimed,
not settled), read live, and is the sum of its ``running``, ``prefetched`` and
``orphaned``; a supervisor's ``busy``,
``prefetched`` and ``orphaned`` add up to the queues' the same way. The ``running`` list
holds what the supervisors published, so a job that just started is counted at once and
listed after its supervisor's next heartbeat; a gone supervisor lists none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
        """The documented JSON shape (this module's docstring)."""
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


def as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def cut_text(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + "…"
