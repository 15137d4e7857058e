"""How children (and fork servers) end, as the supervisor sees it: the words for an
exit, the failures their jobs are settled with, and the limit on how fast they are
replaced (a job file that crashes every child must not cause a fork storm).
"""

from __future__ import annotations

import logging
import os
import signal
from collections import deque

from ..job_errors import ErrorKind
from ..store import Settlement
from .base import failure, timed_out

log = logging.getLogger(__name__)

MIB = 1024 * 1024


def describe_exit(pid: int, status: int | None, limits: dict[str, int],
                  lost_with: int = 0) -> str:
    """How a child ended, for a job's error and the log. LOST_WITH: the pid of its fork
    server, when that died (and so the child, by PR_SET_PDEATHSIG)."""
    if lost_with:
        return (f"the child process running the job (pid {pid}) was killed: its fork "
                f"server (pid {lost_with}) died")
    if status is None:
        return f"the child process running the job (pid {pid}) exited (status unknown)"
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return (f"the child process running the job (pid {pid}) exited with code {code} "
                "(os._exit or sys.exit in the job)")
    sig = -code
    try:
        name = signal.Signals(sig).name
    except ValueError:  # a real-time signal has no name
        name = f"signal {sig}"
    text = f"the child process running the job (pid {pid}) was killed by {name}"
    text += f" ({signal.strsignal(sig)})"
    if sig == signal.SIGXCPU and "cpu_seconds" in limits:
        text += f": the job used up child_limits.cpu_seconds={limits['cpu_seconds']}"
    elif sig == signal.SIGKILL:
        text += ", not sent by sandboxrunner: perhaps the kernel's out-of-memory killer"
    return text


def crashed(job_id: str, how: str) -> Settlement:
    """The child running the job died (HOW: `describe_exit`)."""
    return failure(job_id, ErrorKind.CRASHED, "ChildCrashed", f"{how}; it was replaced")


def broke_protocol(job_id: str, pid: int, what_it_did: str) -> Settlement:
    return failure(job_id, ErrorKind.CRASHED, "ChildProtocolError",
                   f"the child process running the job (pid {pid}) {what_it_did}; it was "
                   "killed and replaced")


def over_memory(job_id: str, pid: int, rss: int, limit_mib: int) -> Settlement:
    return failure(job_id, ErrorKind.MEMORY, "MemoryLimitExceeded",
                   f"the child process running the job (pid {pid}) and the processes it "
                   f"started used {rss / MIB:.0f} MiB (RSS), over "
                   f"memory_limit_per_child={limit_mib} MiB; they were killed and the "
                   "child replaced")


def killed_at_deadline(job_id: str, timeout_ms: int, pid: int) -> Settlement:
    return timed_out(job_id, timeout_ms, f"its child process (pid {pid}) and every process "
                     "it started were killed")


class RespawnLimiter:
    """billiard's one good idea: past MAX_DEATHS unexpected deaths in WINDOW_S, wait
    before starting a process again, doubling the wait up to MAX_DELAY_S while deaths
    continue."""

    def __init__(self, max_deaths: int = 10, window_s: float = 10.0,
                 first_delay_s: float = 0.1, max_delay_s: float = 5.0) -> None:
        self.max_deaths, self.window_s = max_deaths, window_s
        self.first_delay_s, self.max_delay_s = first_delay_s, max_delay_s
        self.delay_s = 0.0
        self._deaths: deque[float] = deque()

    def record(self, now: float) -> float:
        """Note an unexpected death; the delay before the next start (0: none)."""
        self._deaths.append(now)
        while self._deaths[0] < now - self.window_s:
            self._deaths.popleft()
        if len(self._deaths) <= self.max_deaths:
            self.delay_s = 0.0
        else:
            self.delay_s = min(max(self.delay_s * 2, self.first_delay_s), self.max_delay_s)
        return self.delay_s

    def note_crash(self, now: float, where: str) -> float:
        """`record` a child's unexpected death in WHERE, saying so when it backs off."""
        delay = self.record(now)
        if delay:
            log.error("crash loop in %s: %d children died in the last %.0f s; waiting %.1f s "
                      "before forking again (check the job logs and child_limits)", where,
                      len(self._deaths), self.window_s, delay)
        return delay
