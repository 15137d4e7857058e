"""Who serves a queue, as Redis shows it: the records a waiting caller and `redis stop`
read, built by pure functions from raw replies (the sync and asyncio stores send the
same commands and parse the replies here, so the two cannot disagree), and the
`NoSupervisor` error a waiting caller raises from them.

A supervisor's liveness is judged by the server clock: the ``sups`` set of each queue
holds the server time of its last heartbeat (see keys.py), and a supervisor is live
while that is within its lease.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from .errors import NoSupervisor
from .job import text
from .keys import Keys, queue_of_job


@dataclass(frozen=True)
class SupervisorSeen:
    """A supervisor in a queue's ``sups`` set; host, pid and lease come from its snapshot
    (empty when the snapshot expired: it has been silent for several leases)."""

    sid: str
    silent_ms: int  # server ms since its last heartbeat
    host: str = ""
    pid: int = 0
    lease_ms: int = 0

    def live(self, default_lease_ms: int) -> bool:
        return self.silent_ms <= (self.lease_ms or default_lease_ms)

    def describe(self) -> str:
        """``SID (host H, pid P)``, or the bare SID when its snapshot is gone."""
        return f"{self.sid} (host {self.host}, pid {self.pid})" if self.pid else self.sid


def server_ms(time_reply: list[Any]) -> int:
    """The server clock in ms from a raw TIME reply ([seconds, microseconds])."""
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) // 1000


def seen_in(withscores: list[Any], now_ms: int) -> list[SupervisorSeen]:
    """The supervisors of a raw ``ZRANGE sups 0 -1 WITHSCORES`` reply: [member, score]
    pairs under RESP3, a flat member, score, ... list under RESP2."""
    if withscores and isinstance(withscores[0], list):
        pairs = [(member, score) for member, score in withscores]
    else:
        pairs = list(zip(withscores[::2], withscores[1::2], strict=True))
    return [SupervisorSeen(text(member), now_ms - int(float(score))) for member, score in pairs]


def newest_per_supervisor(now_ms: int, sups_replies: list[Any]) -> list[SupervisorSeen]:
    """Each supervisor of several queues' raw ``sups`` replies once, by its newest
    heartbeat on any of them."""
    newest: dict[str, SupervisorSeen] = {}
    for reply in sups_replies:
        for seen in seen_in(reply, now_ms):
            if seen.sid not in newest or seen.silent_ms < newest[seen.sid].silent_ms:
                newest[seen.sid] = seen
    return list(newest.values())


def with_snapshot(seen: SupervisorSeen, raw: Any) -> SupervisorSeen:
    """SEEN with the host, pid and lease of its raw snapshot JSON (unchanged if it has
    none, or one that does not parse: it is only for naming the supervisor)."""
    try:
        snapshot = json.loads(text(raw)) if raw is not None else None
        if not isinstance(snapshot, dict):
            return seen
        return replace(seen, host=str(snapshot.get("host", "")), pid=int(snapshot["pid"]),
                       lease_ms=int(snapshot.get("lease_ms", 0)))
    except (ValueError, KeyError, TypeError):
        return seen


@dataclass(frozen=True)
class JobWatch:
    """What a waiting caller reads about its job: the record's status and the supervisor
    holding it (when active), and every supervisor in the queue's ``sups`` set."""

    job_id: str
    queue: str
    status: str  # '' when the record is gone
    holder: str  # the sid of the supervisor it is active on ('' when not active)
    supervisors: tuple[SupervisorSeen, ...]
    paused: bool = False  # its queue is paused (queue_control.py)

    def live_count(self, lease_ms: int) -> int:
        return sum(1 for s in self.supervisors if s.live(lease_ms))


def watch_commands(keys: Keys, job_id: str) -> list[tuple[Any, ...]]:
    """The commands a `JobWatch` is read from, in one round trip."""
    return [("TIME",), ("ZRANGE", keys.sups(queue_of_job(job_id)), 0, -1, "WITHSCORES"),
            ("HMGET", keys.job(job_id), "status", "sid"),
            ("EXISTS", keys.paused(queue_of_job(job_id)))]


def watch_from(job_id: str, replies: list[Any]) -> JobWatch:
    """The `JobWatch` of the raw replies to `watch_commands` (an error reply raises)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    time_reply, sups, (status, holder), paused = replies
    status_text = text(status)
    return JobWatch(job_id, queue_of_job(job_id), status_text,
                    text(holder) if status_text == "active" else "",
                    tuple(seen_in(sups, server_ms(time_reply))), bool(paused))


def live_commands(keys: Keys, queue: str) -> list[tuple[Any, ...]]:
    """The commands the live supervisors of QUEUE are counted from, in one round trip."""
    return [("TIME",), ("ZRANGE", keys.sups(queue), 0, -1, "WITHSCORES")]


def live_from(replies: list[Any], lease_ms: int) -> int:
    """How many supervisors heartbeat within a lease, from the replies to `live_commands`."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    time_reply, sups = replies
    return sum(1 for seen in seen_in(sups, server_ms(time_reply)) if seen.live(lease_ms))


def no_supervisor(watch: JobWatch, lease_ms: int) -> NoSupervisor:
    """The error for a caller whose job nobody live serves, saying what Redis shows: the
    job active on a supervisor that went silent, or queued with nobody serving the queue."""
    holder = next((s for s in watch.supervisors if s.sid == watch.holder), None)
    if watch.status == "active" and watch.holder:
        silence = (f"which stopped heartbeating {holder.silent_ms} ms ago" if holder
                   else "which no longer heartbeats")
        return NoSupervisor(
            f"job {watch.job_id} is active on supervisor {watch.holder}, {silence} (lease "
            f"{lease_ms} ms), and no other live supervisor serves queue {watch.queue!r}: it "
            "is stuck (in thread mode a job holding the GIL, such as a runaway regex, stops "
            "its whole supervisor: run such jobs with --separate-process) or dead (then the "
            "next supervisor to start runs the job again); fetch the result later with "
            "get_result()")
    silent = "; ".join(f"{s.sid} stopped heartbeating {s.silent_ms} ms ago"
                       for s in watch.supervisors)
    return NoSupervisor(
        f"no live supervisor serves queue {watch.queue!r}: none heartbeated in the last "
        f"{lease_ms} ms{f' ({silent})' if silent else ''}; job {watch.job_id} stays queued "
        "and runs once a supervisor serves the queue (`sandboxrunner start`); fetch the "
        "result later with get_result()")
