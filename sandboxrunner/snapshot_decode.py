"""The pure functions that turn a snapshot's raw Redis replies into its records
(snapshot_records.py): the per-second rate series, a supervisor's state, its heartbeat age
and its running jobs' elapsed time (clocks: snapshot.py's docstring), how its leased jobs
split into running, prefetched and orphaned, a master's node, one log line, and the
small readings of raw replies that snapshot.py's rounds need. Nothing here talks to Redis.
A web dashboard reuses these derivations; they are the one place each rule is stated:

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
from dataclasses import dataclass
from typing import Any

from .keys import WAKE_MARKER
from .snapshot_records import (
    ChildInfo,
    LogLine,
    NodeInfo,
    RunningJobInfo,
    SupervisorInfo,
    as_float,
    as_int,
    as_text,
    cut_text,
)

RATE_WINDOW_S = 60


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
                  cpu_percent=as_float(c.get("cpu_percent")), rss_bytes=as_int(c.get("rss_bytes")),
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
    started_ms = int(as_float(snap.get("started_at")) * 1000)
    host, pid = str(snap.get("host", "")), as_int(snap.get("pid"))
    gone = state == "gone"
    info = SupervisorInfo(
        sid=sid, state=state, host=host, pid=pid, mode=str(snap.get("mode", "")),
        queues=tuple(str(q) for q in snap.get("queues") or ()),
        # a gone supervisor's uptime stops at its last heartbeat
        uptime_ms=max(0, beat_ms - started_ms + (0 if gone else age_ms)),
        cpu_percent=as_float(snap.get("cpu_percent")), rss_bytes=as_int(snap.get("rss_bytes")),
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
                       elapsed_ms=max(0, beat_ms - int(as_float(r.get("started_at")) * 1000)
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
    ts_ms = int(as_float(line.get("ts")) * 1000) or as_int(entry_text.partition("-")[0])
    return LogLine(id=entry_text, ts_ms=ts_ms, level=str(line.get("level", "info")),
                   job_id=as_text(fields.get("job")), source=str(line.get("source", "")),
                   msg=cut_text(msg.replace("\n", " ")))


# -- the readings of raw replies that snapshot.py's rounds need --------------------------


def json_object(raw: Any) -> dict[str, Any] | None:
    """A supervisor's snapshot, or None when it expired (or is not a JSON object)."""
    try:
        value = json.loads(as_text(raw) or "null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def leased_by_sid(by_queue: dict[str, list[tuple[str, int]]]) -> dict[str, dict[str, int]]:
    """{queue: [(sid, leased)]} turned around: {sid: {queue: leased}}."""
    out: dict[str, dict[str, int]] = {}
    for q, rows in by_queue.items():
        for sid, n in rows:
            out.setdefault(sid, {})[q] = n
    return out


def last_beats(queues: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Each supervisor's last heartbeat on any queue (server ms), from the ``sups`` zsets."""
    out: dict[str, int] = {}
    for raw in queues.values():
        for sid, score in raw["sups"] or ():
            out[as_text(sid)] = max(out.get(as_text(sid), 0), int(score))
    return out


def has_wake_marker(oldest: Any) -> bool:
    """Whether the two oldest entries of a wait list hold its wake marker (at most one; put
    only onto an empty list, it is the oldest entry while it is there)."""
    return any(as_text(entry) == WAKE_MARKER for entry in oldest or ())


def oldest_job(oldest: Any) -> str:
    """The oldest job id among a wait list's two oldest entries ('' when none)."""
    jobs = [as_text(entry) for entry in oldest or () if as_text(entry) != WAKE_MARKER]
    return jobs[-1] if jobs else ""
