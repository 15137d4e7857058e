"""A pool's children, one at a time: forking one with its pipes, the record the pool
keeps of it, killing its process group and stray descendants, reaping it, and the
measures the pool takes of it (its tree's RSS, how it ended, how fast children die).

executors/processes.py owns the pool and its manager thread and decides when each of
these happens; nothing here takes the pool's lock or knows about jobs in the backlog.
Every supervisor-side pipe end in this process is created here, so each new child can
close all of them (_SUPERVISOR_FDS).
"""

from __future__ import annotations

import enum
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from .. import child as child_mod
from .. import pipes
from ..forkguard import FORK_GUARD
from ..registry import JobSpec

# Supervisor-side fds of every pool in this process. A new child closes them all, so no
# child holds a sibling's pipe open. Created and closed only under _FORK_LOCK, so the
# set a child receives is exact at the moment of its fork.
_FORK_LOCK = threading.Lock()
_SUPERVISOR_FDS: set[int] = set()


class State(enum.StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DYING = "dying"


@dataclass
class Assigned:
    id: str
    name: str
    timeout_ms: int
    deadline: float  # monotonic
    started_at: float  # epoch seconds


@dataclass(eq=False)
class Child:
    pid: int
    cmd_fd: int
    msg_fd: int
    out_fd: int
    pidfd: int  # -1 without pidfd_open: the message pipe's EOF stands in
    known: dict[str, JobSpec]  # specs in the child's memory
    proc: psutil.Process
    forked_at: float
    state: State = State.STARTING
    job: Assigned | None = None
    jobs_served: int = 0
    reader: pipes.FrameReader = field(default_factory=lambda: pipes.FrameReader(
        pipes.FROM_CHILD))
    out_buffer: bytearray = field(default_factory=bytearray)
    kill_at: float | None = None  # SIGKILL escalation
    eof_at: float | None = None  # its message pipe closed: gone by then, or it is broken
    doomed: list[psutil.Process] = field(default_factory=list)  # descendants to kill
    slot: int = 0  # its counter in the pool's nested-call array (context.PoolSlots)
    why: str = ""  # why it is dying
    expected: bool = False  # a death we caused on purpose (not a crash)
    broken: bool = False  # its message pipe is no longer read
    exited: bool = False


class RespawnLimiter:
    """billiard's one good idea: past MAX_DEATHS unexpected deaths in WINDOW_S, wait
    before forking again, doubling the wait up to MAX_DELAY_S while deaths continue."""

    def __init__(self, max_deaths: int = 10, window_s: float = 10.0,
                 first_delay_s: float = 0.1, max_delay_s: float = 5.0) -> None:
        self.max_deaths, self.window_s = max_deaths, window_s
        self.first_delay_s, self.max_delay_s = first_delay_s, max_delay_s
        self.delay_s = 0.0
        self._deaths: deque[float] = deque()

    def record(self, now: float) -> float:
        """Note an unexpected death; the delay before the next fork (0: none)."""
        self._deaths.append(now)
        while self._deaths[0] < now - self.window_s:
            self._deaths.popleft()
        if len(self._deaths) <= self.max_deaths:
            self.delay_s = 0.0
        else:
            self.delay_s = min(max(self.delay_s * 2, self.first_delay_s), self.max_delay_s)
        return self.delay_s

    def recent(self) -> int:
        return len(self._deaths)


def open_supervisor_pipe() -> tuple[int, int]:
    """A pipe of the supervisor's own (read end, write end), closed in every child."""
    with _FORK_LOCK:
        read_fd, write_fd = os.pipe()
        _SUPERVISOR_FDS.update((read_fd, write_fd))
    return read_fd, write_fd


def close_fds(fds: list[int]) -> None:
    with _FORK_LOCK:
        for fd in fds:
            if fd >= 0:
                _SUPERVISOR_FDS.discard(fd)
                os.close(fd)


def _open_pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux < 5.3
        return -1


def fork_child(make_setup: Callable[..., child_mod.ChildSetup], slot: int) -> Child | None:
    """A new child, or None when a thread is inside OpenSSL (forkguard.py): the caller
    waits for that without its own locks held (FORK_GUARD.wait_until_clear) and retries.

    MAKE_SETUP is the pool's ChildSetup with every field bound but the pipe ends and the
    parent pid, which are added here; SLOT is the child's counter in context.PoolSlots.
    """
    with _FORK_LOCK, FORK_GUARD.exclusive(0) as clear:
        if not clear:
            return None
        cmd_r, cmd_w = os.pipe()
        msg_r, msg_w = os.pipe()
        out_r, out_w = os.pipe()
        setup = make_setup(
            cmd_fd=cmd_r, msg_fd=msg_w, out_fd=out_w,
            inherited_fds=(*_SUPERVISOR_FDS, cmd_w, msg_r, out_r),
            parent_pid=os.getpid())
        try:
            pid = os.fork()
        except OSError:
            for fd in (cmd_r, cmd_w, msg_r, msg_w, out_r, out_w):
                os.close(fd)
            raise
        if pid == 0:
            child_mod.main(setup)  # never returns
        for fd in (cmd_r, msg_w, out_w):
            os.close(fd)
        pidfd = _open_pidfd(pid)
        _SUPERVISOR_FDS.update(fd for fd in (cmd_w, msg_r, out_r, pidfd) if fd >= 0)
    return Child(pid, cmd_w, msg_r, out_r, pidfd, setup.specs, psutil.Process(pid),
                 time.monotonic(), slot=slot)


def describe_exit(pid: int, status: int | None, limits: dict[str, int]) -> str:
    """How a child ended, for a job's error and the log."""
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


def signal_tree(child: Child, sig: int) -> None:
    """Send SIG to CHILD's process group and to its doomed descendants. CHILD is not
    reaped yet, so its pid (and group id) cannot belong to a stranger."""
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        # no such group: the child was forked a moment ago and has not called setsid
        # yet (it has started nothing either), or it is a zombie already
        try:
            os.kill(child.pid, sig)
        except ProcessLookupError:
            pass
    for proc in child.doomed:  # descendants that may have left the group
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


def reap(pid: int) -> int | None:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:  # someone else's waitpid(-1) took it
        return None


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for member in (proc, *descendants(proc.pid)):
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass  # gone meanwhile
    return total


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below PID. Walks /proc/P/task/T/children down the tree, which
    costs microseconds; psutil's children() reads every process on the host (ms)."""
    if not _PROC_CHILDREN:
        try:
            return psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            return []
    found: list[psutil.Process] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for kid in _children_of(parent):
            try:
                found.append(psutil.Process(kid))  # remembers its start time: no pid reuse
            except psutil.Error:
                continue
            todo.append(kid)
    return found


def _children_of(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids += [int(k) for k in fh.read().split()]
    except OSError:
        pass  # exited meanwhile
    return kids


# /proc/P/task/T/children needs CONFIG_PROC_CHILDREN (on in mainstream kernels)
_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
