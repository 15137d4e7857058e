"""The records of one `top` snapshot, and the pure functions that build them from raw
Redis replies: tolerant decoding, the per-second rate series, a supervisor's state, its
heartbeat age and its running jobs' elapsed time (clocks: snapshot.py's docstring), one
log line.

Nothing here talks to Redis: snapshot.py reads the replies and hands them over. The JSON
shape of `Snapshot.to_json` is documented in snapshot.py's docstring.
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
    delayed: int  # failed attempts waiting for their retry's backoff
    active: int
    enqueued: int
    completed: int
    failed: int
    retried: int
    stalled: int
    jobs_per_s: float
    rate_per_s: tuple[int, ...]  # completions per second over the last minute, oldest first
    oldest_waiting_ms: int | None
    supervisors: int  # live supervisors serving it


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
    busy: int
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


@dataclass(frozen=True)
class LogLine:
    id: str
    ts_ms: int
    level: str
    job_id: str
    source: str
    msg: str


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

    def live_supervisors(self) -> int:
        return sum(1 for s in self.supervisors if s.state != "gone")

    def totals(self) -> dict[str, Any]:
        return {
            "waiting": sum(q.waiting for q in self.queues),
            "active": sum(q.active for q in self.queues),
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
            "redis": {"url": self.redis_url, "version": self.redis_version},
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


def gone_supervisor(sid: str, age_ms: int) -> SupervisorInfo:
    host, pid = _sid_parts(sid)
    return SupervisorInfo(sid=sid, state="gone", host=host, pid=pid, mode="", queues=(),
                          uptime_ms=0, cpu_percent=0.0, rss_bytes=0, heartbeat_age_ms=age_ms,
                          capacity=0, busy=0, children=())


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def decode_supervisor(sid: str, snap: dict[str, Any], pttl: int, now_ms: int,
                default_lease_ms: int) -> tuple[SupervisorInfo, list[RunningJobInfo]]:
    beat_ms = as_int(snap.get("heartbeat_ms"))
    ttl_ms = as_int(snap.get("ttl_ms"))
    # PTTL gives the snapshot's age on the server's clock; a supervisor that publishes no
    # ttl_ms leaves only a comparison of two hosts' clocks
    age_ms = max(0, ttl_ms - pttl if ttl_ms and pttl >= 0 else now_ms - beat_ms)
    lease_ms = as_int(snap.get("lease_ms")) or default_lease_ms
    raw_executors = snap.get("executors")
    executors: dict[str, dict[str, Any]] = {
        str(q): ex for q, ex in raw_executors.items() if isinstance(ex, dict)
    } if isinstance(raw_executors, dict) else {}
    host, pid = str(snap.get("host", "")), as_int(snap.get("pid"))
    info = SupervisorInfo(
        sid=sid, state="late" if age_ms > lease_ms else "live", host=host, pid=pid,
        mode=str(snap.get("mode", "")),
        queues=tuple(str(q) for q in snap.get("queues") or ()),
        uptime_ms=max(0, beat_ms - int(_float(snap.get("started_at")) * 1000) + age_ms),
        cpu_percent=_float(snap.get("cpu_percent")), rss_bytes=as_int(snap.get("rss_bytes")),
        heartbeat_age_ms=age_ms,
        capacity=sum(as_int(ex.get("capacity")) for ex in executors.values()),
        busy=sum(as_int(ex.get("running")) for ex in executors.values()),
        children=tuple(
            ChildInfo(queue=q, pid=as_int(c.get("pid")), state=str(c.get("state", "")),
                      job_id=c.get("job_id"), job_name=c.get("job_name"),
                      cpu_percent=_float(c.get("cpu_percent")),
                      rss_bytes=as_int(c.get("rss_bytes")),
                      jobs_served=as_int(c.get("jobs_served")))
            for q, ex in executors.items() for c in _dicts(ex.get("children"))
        ),
    )
    # started_at and heartbeat_ms are both the supervisor's clock: skew cancels out
    jobs = [
        RunningJobInfo(id=str(r.get("id", "")), name=str(r.get("name", "")),
                       queue=str(r.get("queue", "")), sid=sid, host=host, supervisor_pid=pid,
                       worker=str(r.get("worker", "")), timeout_ms=as_int(r.get("timeout_ms")),
                       elapsed_ms=max(0, beat_ms - int(_float(r.get("started_at")) * 1000)
                                      + age_ms))
        for r in _dicts(snap.get("running"))
    ]
    return info, jobs


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
