"""The supervisor's record of one child of a pool: its state machine, its pipes, and
reading what it sends. (What runs inside the child is in_child.py.)

  STARTING --READY--> IDLE --RUN--> BUSY --DONE--> IDLE
     |                 |              |
     +-----------------+--------------+--> SILENT    its message pipe closed while it
     |                 |              |      |       lives: it has PIPE_EOF_GRACE_S to exit
     +-----------------+--------------+------+-> STOPPING  the pool signalled it (why, and
     |                 |              |      |       |     whether on purpose); SIGKILL
     |                 |              |      |       |     KILL_GRACE_S after a SIGTERM
     +-----------------+--------------+------+-------+-> EXITED  seen dead (pidfd), reaped

A child not READY within STARTUP_TIMEOUT_S is killed. Each state carries its own data (a
busy child its job, a stopping one why and when to escalate), so nothing has to be kept
in step by hand, and `Child.move` refuses a move the drawing does not have. Only
STARTING, IDLE and BUSY children serve: they count toward the pool's size (a replacement
is asked for as soon as one leaves them, while the old process group is still dying)
and their messages are read. A stopping child's job is settled already, so what it still
writes is dropped; a silent child's output is still read, as its job is not over.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psutil

from ..job import Status
from ..registry import JobSpec
from . import pipes
from .process_tree import descendants, signal_tree

MIB = 1024 * 1024
MAX_OUTPUT_LINE = 64 * 1024
KILL_GRACE_S = 0.15  # SIGTERM to SIGKILL
STARTUP_TIMEOUT_S = 10.0


# The records made for every job (Assigned, Busy, Done) are not frozen: a frozen
# dataclass takes five times longer to make (1.9 us against 0.36 us for five fields).
# Each state says whether the child serves (counts toward the pool, is listened to),
# the job it has, and when the manager must look at it again (wake_at): plain class or
# instance attributes, read on every turn of the manager thread.


@dataclass
class Assigned:
    """The job a busy child runs, as the pool watches it."""

    id: str
    name: str
    timeout_ms: int
    deadline: float  # monotonic
    started_at: float  # epoch seconds


@dataclass(frozen=True)
class Starting:
    wake_at: float  # monotonic: killed unless READY by then
    label: ClassVar[str] = "starting"
    serving: ClassVar[bool] = True
    job: ClassVar[None] = None


@dataclass(frozen=True)
class Idle:
    label: ClassVar[str] = "idle"
    serving: ClassVar[bool] = True
    job: ClassVar[None] = None
    wake_at: ClassVar[None] = None


IDLE = Idle()


@dataclass
class Busy:
    job: Assigned  # its deadline is in PoolTimers' heap
    label: ClassVar[str] = "busy"
    serving: ClassVar[bool] = True
    wake_at: ClassVar[None] = None


@dataclass(frozen=True)
class Silent:
    wake_at: float  # monotonic: killed as broken if still alive then
    job: Assigned | None  # failed if it never exits
    label: ClassVar[str] = "dying"
    serving: ClassVar[bool] = False


@dataclass(frozen=True)
class Stopping:
    why: str
    expected: bool  # caused on purpose (timeout, recycle, close): not a crash
    wake_at: float | None = None  # monotonic: SIGKILL then, after a SIGTERM
    doomed: tuple[psutil.Process, ...] = ()  # descendants found before the signal
    label: ClassVar[str] = "dying"
    serving: ClassVar[bool] = False
    job: ClassVar[None] = None


@dataclass(frozen=True)
class Exited:
    label: ClassVar[str] = "exited"
    serving: ClassVar[bool] = False
    job: ClassVar[None] = None
    wake_at: ClassVar[None] = None


State = Starting | Idle | Busy | Silent | Stopping | Exited


@dataclass(frozen=True)
class Ready:
    """READY: it set itself up."""


@dataclass
class LogLine:
    """LOG: a log line (ctx.log or a print) of job JOB_ID."""

    job_id: str
    line: dict[str, Any]


@dataclass
class Progress:
    """PROGRESS: the latest ctx.progress report of job JOB_ID, as JSON."""

    job_id: str
    text: str


@dataclass
class Done:
    """DONE: its job ended; BODY is the result JSON or ErrorInfo JSON."""

    status: Status
    body: str


@dataclass(frozen=True)
class Broken:
    """BROKEN: it could not set itself up (it exits next)."""

    why: str


Message = Ready | LogLine | Progress | Done | Broken

_MOVES: dict[type[Any], tuple[type[Any], ...]] = {
    Starting: (Idle, Silent, Stopping, Exited),
    Idle: (Busy, Silent, Stopping, Exited),
    Busy: (Idle, Silent, Stopping, Exited),
    Silent: (Stopping, Exited),
    Stopping: (Stopping, Exited),  # a SIGTERM escalated to SIGKILL
    Exited: (),
}


@dataclass(eq=False)
class Child:
    pid: int
    cmd_fd: int
    msg_fd: int
    out_fd: int
    pidfd: int  # -1 without pidfd_open: the message pipe's EOF stands in
    proc: psutil.Process
    slot: int  # its counter in the pool's nested-call array (context.PoolSlots)
    server: Any  # the fork server it came from (forkserver_process.ServerProcess)
    known: dict[str, JobSpec]  # specs in the child's memory
    state: State = field(default_factory=lambda: Starting(
        time.monotonic() + STARTUP_TIMEOUT_S))
    jobs_served: int = 0
    reader: pipes.FrameReader = field(default_factory=lambda: pipes.FrameReader(
        pipes.FROM_CHILD))
    out_buffer: bytearray = field(default_factory=bytearray)

    def move(self, state: State) -> None:
        if type(state) not in _MOVES[type(self.state)]:
            raise RuntimeError(f"child {self.pid}: no move from {self.state} to {state}")
        self.state = state

    @property
    def job(self) -> Assigned | None:
        """The job it runs (busy) or ran when its pipe closed (silent)."""
        return self.state.job

    @property
    def serving(self) -> bool:
        """Counted toward the pool and listened to: starting, idle or busy."""
        return self.state.serving

    def stop(self, why: str, graceful: bool, expected: bool) -> None:
        """Signal it and all it started: SIGTERM if GRACEFUL (SIGKILL KILL_GRACE_S later,
        see `escalate`), else SIGKILL. EXPECTED: on purpose, not a crash."""
        # found before the signal: once it dies, its descendants are init's
        doomed = tuple(descendants(self.pid)) if isinstance(self.state, Busy) else ()
        kill_at = time.monotonic() + KILL_GRACE_S if graceful else None
        self.move(Stopping(why, expected, kill_at, doomed))
        signal_tree(self.pid, signal.SIGTERM if graceful else signal.SIGKILL, doomed)

    def escalate(self, now: float) -> None:
        """SIGKILL a stopping child whose SIGTERM grace is over (or at once: NOW=inf)."""
        state = self.state
        if isinstance(state, Stopping) and state.wake_at is not None and state.wake_at <= now:
            self.move(Stopping(state.why, state.expected, None, state.doomed))
            signal_tree(self.pid, signal.SIGKILL, state.doomed)

    def fds(self) -> list[int]:
        return [self.cmd_fd, self.msg_fd, self.out_fd, self.pidfd]

    def read_messages(self) -> tuple[list[Message], int]:
        """What one read of its message pipe brought, and how many bytes that was: 0 at
        EOF, -1 when nothing waits. Raises pipes.ProtocolError on garbage: nothing a
        child sends is trusted (a job can write anything to the pipe)."""
        try:
            data = os.read(self.msg_fd, pipes.READ_CHUNK)
        except BlockingIOError:
            return [], -1
        return [_parse(kind, payload) for kind, payload in self.reader.feed(data)], len(data)

    def read_output(self, budget: int, final: bool = False) -> tuple[list[str], bool]:
        """Lines its fd 1/2 carried (one read when BUDGET is 0), and whether every writer
        closed the pipe. FINAL: its job is over, so a last line without its newline is
        complete too."""
        eof = False
        while True:
            try:
                data = os.read(self.out_fd, pipes.READ_CHUNK)
            except BlockingIOError:
                break
            if not data:
                eof = True
                break
            self.out_buffer += data
            budget -= len(data)
            if budget <= 0:
                break
        *lines, rest = self.out_buffer.split(b"\n")
        if len(rest) > MAX_OUTPUT_LINE or (final and rest):
            lines.append(rest)
            rest = bytearray()
        self.out_buffer = bytearray(rest)
        return [raw.decode(errors="replace") for raw in lines], eof

    def recycle_reason(self, max_jobs: int | None, max_mib: int | None) -> str:
        """Why it must be replaced after the job it just finished ('' if it need not)."""
        if max_jobs and self.jobs_served >= max_jobs:
            return f"it served {self.jobs_served} jobs (max_jobs_per_child={max_jobs})"
        if max_mib:
            try:
                rss = self.proc.memory_info().rss
            except psutil.Error:
                return ""
            if rss > max_mib * MIB:
                return (f"its RSS of {rss / MIB:.0f} MiB is over "
                        f"max_memory_per_child={max_mib} MiB")
        return ""


_STATUSES = {ord("c"): Status.COMPLETED, ord("f"): Status.FAILED}


def _parse(kind: int, payload: bytes) -> Message:
    if kind == pipes.DONE:  # once a job: first
        status = _STATUSES.get(payload[0]) if payload else None
        if status is None:
            raise pipes.ProtocolError("a DONE frame without a status")
        try:
            return Done(status, payload[1:].decode())
        except UnicodeDecodeError as exc:
            raise pipes.ProtocolError(f"a DONE frame that is not UTF-8: {exc}") from None
    if kind == pipes.LOG:
        job_id, sep, text = payload.partition(b"\n")
        try:
            line = json.loads(text)
        except ValueError as exc:
            raise pipes.ProtocolError(f"a LOG frame that is not JSON: {exc}") from None
        if not sep or not isinstance(line, dict):
            raise pipes.ProtocolError("a LOG frame that is not a job id and a JSON object")
        return LogLine(job_id.decode(errors="replace"), line)
    if kind == pipes.PROGRESS:
        job_id, _, text = payload.partition(b"\n")
        return Progress(job_id.decode(errors="replace"), text.decode(errors="replace"))
    if kind == pipes.READY:
        return Ready()
    return Broken(payload.decode(errors="replace"))
