"""Who serves a queue, as Redis shows it: the records a waiting caller and `redis stop`
read, built by pure functions from raw replies (the sync and asyncio stores send the
same commands and parse the replies here, so the two cannot disagree).

A supervisor's liveness is judged by the server clock: the ``sups`` set of each queue
holds the server time of its last heartbeat (see keys.py), and a supervisor is live
while that is within its lease.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any


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


def text(value: Any) -> str:
    if value is None:
        return ""
    # errors="replace": a malformed entry written by hand must not crash its reader
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


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
