"""The supervisor's record of one child of a pool: its state machine, its pipes, and
reading what it sends. (What runs inside the child is in_child.py.)

  STARTING --READY--> IDLE --RUN--> BUSY --DONE--> IDLE
     |                 |              |
     +-----------------+--------------+--> SILENT    its message pipe closed while it
     |                 |              |      |       lives: it has PIPE_EOF_GRACE_S to exit
     +-----------------+--------------+------+-> STOPPING  the pool signalled it (why, and
     |                 |              |      |       |     whether on purpose); SIGKILL
     |                 |              |      |       |     at kill_at after a SIGTERM
     +-----------------+--------------+------+-------+-> EXITED  seen dead (pidfd), reaped

Each state carries its own data (a busy child its job, a stopping one why and when to
escalate), so nothing has to be kept in step by hand, and `Child.move` refuses a move the
drawing does not have. Only STARTING, IDLE and BUSY children count toward the pool's
size: a replacement is asked for as soon as one leaves them, while the old process group
is still dying. Only they are listened to: a silent or stopping child's job has already
been settled, so what it still writes is dropped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psutil

from ..registry import JobSpec
from . import pipes

MAX_OUTPUT_LINE = 64 * 1024


@dataclass(frozen=True)
class Assigned:
    """The job a busy child runs, as the pool watches it."""

    id: str
    name: str
    timeout_ms: int
    deadline: float  # monotonic
    started_at: float  # epoch seconds


@dataclass(frozen=True)
class Starting:
    since: float  # monotonic: killed unless READY by since + the startup timeout
    label: ClassVar[str] = "starting"


@dataclass(frozen=True)
class Idle:
    label: ClassVar[str] = "idle"


@dataclass(frozen=True)
class Busy:
    job: Assigned
    label: ClassVar[str] = "busy"


@dataclass(frozen=True)
class Silent:
    until: float  # monotonic: killed as broken if still alive then
    job: Assigned | None  # failed if it never exits
    label: ClassVar[str] = "dying"


@dataclass(frozen=True)
class Stopping:
    why: str
    expected: bool  # caused on purpose (timeout, recycle, close): not a crash
    kill_at: float | None = None  # monotonic: SIGKILL after a SIGTERM
    doomed: tuple[psutil.Process, ...] = ()  # descendants found before the signal
    label: ClassVar[str] = "dying"


@dataclass(frozen=True)
class Exited:
    label: ClassVar[str] = "exited"


State = Starting | Idle | Busy | Silent | Stopping | Exited

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
    server: Any  # the fork server it came from (forkserver.ServerProcess)
    known: dict[str, JobSpec]  # specs in the child's memory
    state: State = field(default_factory=lambda: Starting(time.monotonic()))
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
        state = self.state
        return state.job if isinstance(state, Busy | Silent) else None

    @property
    def serving(self) -> bool:
        """Counted toward the pool and listened to: starting, idle or busy."""
        return isinstance(self.state, Starting | Idle | Busy)

    def fds(self) -> list[int]:
        return [self.cmd_fd, self.msg_fd, self.out_fd, self.pidfd]

    def read_frames(self, budget: int) -> tuple[list[tuple[int, bytes]], bool]:
        """Frames from its message pipe, reading until it is empty or BUDGET bytes came,
        and whether it reached EOF. Raises pipes.ProtocolError on garbage."""
        frames: list[tuple[int, bytes]] = []
        while budget > 0:
            try:
                data = os.read(self.msg_fd, pipes.READ_CHUNK)
            except BlockingIOError:
                return frames, False
            if not data:
                return frames, True
            budget -= len(data)
            frames += self.reader.feed(data)
        return frames, False

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
