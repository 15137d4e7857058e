"""Runs inside a child: reads jobs from its pipe, runs them, sends results and logs.

A child is forked by the fork server (in_forkserver.py), a single-threaded process that
holds the job registry, so every job known then is already in its memory and nothing is
re-imported; the supervisor's pool (processes.py, pool.py) asks for it and talks to it.
Its life:

  1. detach: its own session and process group (os.setsid), so the supervisor can kill
     it together with everything it started; PR_SET_PDEATHSIG=SIGKILL, so it dies with
     its fork server, which dies with the supervisor (SIGKILL included); default signal
     dispositions; the fork server's socket is closed, so the child holds no end of
     anything but its own three pipes, and a gone supervisor shows as EOF on the command
     pipe.
  2. output: fd 0 reads /dev/null; fd 1 and 2 point at the child's output pipe, which
     the supervisor turns into log lines of the running job (C-level writes, faulthandler
     dumps and subprocesses land there). sys.stdout and sys.stderr are replaced by line
     writers that send each line as a LOG frame on the message pipe, so Python prints
     stay in order with ctx.log lines.
  3. child_limits applied with setrlimit, READY sent.
  4. serve: read a RUN frame (the claimed job as the supervisor claimed it), run the
     handler (sync directly, async on an event loop kept for the child's life), send
     DONE. EOF on the command pipe: exit. A job calling sys.exit ends the child with that
     exit code, as it would end a process.
Its process title says which queue it serves and what it runs (proctitle.py).

The child never returns into the fork server's code and always leaves with os._exit, so
no atexit handler or finaliser of a parent (or of pytest) runs twice. Everything it needs
is imported here, before any fork. Where a job's output goes: in_child_output.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import errno
import faulthandler
import gc
import json
import math
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

# unpickles the specs a child is sent; imported here, before any fork
import cloudpickle  # noqa: F401

from ..context import JobContext, JobLogger, PoolSlots, current_job
from ..errors import UnknownJob
from ..job import Status
from ..job_errors import ErrorInfo, ErrorKind
from ..proctitle import child_title, set_title
from ..registry import JobSpec
from ..store import ClaimedJob, Settlement
from . import pipes
from .base import failure, success
from .in_child_output import LineWriter, PipeLogSink, PipeProgressSink

EXIT_INIT_FAILED = 70  # could not set itself up; the supervisor logs the BROKEN text
EXIT_ORPHANED = 71  # the process it came from went away
EXIT_INTERNAL = 72  # a bug in this module, not in the job

PR_SET_PDEATHSIG = 1
MIB = 1024 * 1024
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded now: dlopen after a fork can deadlock

# For tests and for the curious: the running child's state (None in the supervisor).
CURRENT: ChildRuntime | None = None


@dataclass(frozen=True)
class ChildSetup:
    """What a child gets from its fork server (in memory, not over the pipe)."""

    queue: str
    cmd_fd: int
    msg_fd: int
    out_fd: int
    inherited_fds: tuple[int, ...]  # the fork server's own fds, closed in the child
    parent_pid: int  # the fork server
    specs: dict[str, JobSpec]
    log_max_lines: int
    limits: dict[str, int]
    make_client: Callable[[], Any] | None  # the child's client for a nested run_job
    slots: PoolSlots | None = None  # lets a nested run_job see its pool (deadlock check)


class Sender:
    """Writes frames to the supervisor; a lock keeps frames of job threads whole."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()

    def send(self, kind: int, payload: bytes = b"") -> None:
        data = pipes.frame(kind, payload)
        try:
            with self._lock:
                pipes.write_all(self.fd, data)
        except BrokenPipeError:
            os._exit(EXIT_ORPHANED)  # nobody is left to hear from us


class ChildRuntime:
    """The state of one child for its whole life."""

    def __init__(self, setup: ChildSetup) -> None:
        self.setup = setup
        self.queue = setup.queue
        self.specs = dict(setup.specs)
        self.limits = setup.limits
        self.sender = Sender(setup.msg_fd)
        self.sink = PipeLogSink(self.sender, setup.queue, setup.log_max_lines)
        self.progress = PipeProgressSink(self.sender)
        self.writers: list[LineWriter] = []
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def serve(self) -> None:
        """Run calls until the command pipe closes."""
        reader = pipes.FrameReader(pipes.TO_CHILD)
        while True:
            data = os.read(self.setup.cmd_fd, pipes.READ_CHUNK)
            if not data:
                return
            for _kind, payload in reader.feed(data):
                outcome = self.run(*pipes.decode_run(payload))
                status = b"c" if outcome.status == Status.COMPLETED else b"f"
                self.sender.send(pipes.DONE, status + outcome.body.encode())

    def run(self, job: ClaimedJob, spec_blob: bytes | None) -> Settlement:
        try:
            spec = self._spec(job.name, spec_blob)
        except Exception as exc:  # noqa: BLE001 - refused before the handler runs
            return failure(job.id, ErrorKind.INVALID, type(exc).__name__,
                           f"the child could not start job {job.name!r}: {exc}")
        try:
            data = json.loads(job.data_json) if job.data_json else None
        except ValueError as exc:  # a record written by hand: as executors/base.resolve
            return failure(job.id, ErrorKind.INVALID, "MalformedJob",
                           f"job data is not valid JSON: {exc}")
        ctx = JobContext(job=job.record(self.queue, data),
                         log=JobLogger(self.sink, job.id, self.queue),
                         slots=self.setup.slots, make_client=self.setup.make_client,
                         progress_sink=self.progress)
        self.sink.begin(job.id)
        set_title(child_title(self.queue, job.name, job.id))
        if "cpu_seconds" in self.limits:
            _arm_cpu_limit(self.limits["cpu_seconds"])
        token = current_job.set(ctx)
        try:
            value = spec.call(data, ctx)
            if spec.is_async:
                value = self._event_loop().run_until_complete(value)
            return success(job.id, value)
        except SystemExit as exc:
            # the job ends the process, as it asked; a message is printed while the
            # job's lines are still credited to it
            self.exit_code = _exit_code(exc)
            raise
        except BaseException as exc:  # noqa: BLE001 - a job's failure, reported to its caller
            return self._raised(job.id, exc)
        finally:
            current_job.reset(token)
            self.end_job()

    def end_job(self) -> None:
        """Flush what the job wrote: partial lines, then C stdio into the output pipe,
        so the supervisor (which drains that pipe before settling) credits this job."""
        for writer in self.writers:
            writer.finish()
        _LIBC.fflush(None)
        self.progress.buffer.flush()  # its last report, before its outcome
        self.sink.begin("")
        set_title(child_title(self.queue))

    def _spec(self, name: str, spec_blob: bytes | None) -> JobSpec:
        if spec_blob is not None:
            spec: JobSpec = pipes.from_supervisor(spec_blob)
            self.specs[name] = spec
            return spec
        try:
            return self.specs[name]
        except KeyError:
            raise UnknownJob(name, list(self.specs)) from None

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop

    def _raised(self, job_id: str, exc: BaseException) -> Settlement:
        info = ErrorInfo.from_exception(exc)
        hint = _limit_hint(exc, self.limits)
        if hint:
            info = dataclasses.replace(info, message=f"{info.message}; {hint}".lstrip("; "))
        return Settlement(job_id, Status.FAILED, info.to_json())


def _limit_hint(exc: BaseException, limits: dict[str, int]) -> str:
    if isinstance(exc, MemoryError) and "address_space_mib" in limits:
        return (f"the child reached its address space limit "
                f"child_limits.address_space_mib={limits['address_space_mib']}")
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE and "open_files" in limits:
        return f"the child reached child_limits.open_files={limits['open_files']}"
    return ""


# -- setting up ------------------------------------------------------------------------


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the thread that started it ends (PR_SET_PDEATHSIG), and
    exit now if PARENT_PID died already, before the prctl took effect."""
    if _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(EXIT_ORPHANED)


def _detach(setup: ChildSetup) -> None:
    os.setsid()
    die_with_parent(setup.parent_pid)
    for fd in setup.inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    # whatever handlers its parent had mean nothing here: SIGTERM must kill a child at once
    for sig in signal.valid_signals():
        if callable(signal.getsignal(sig)):
            signal.signal(sig, signal.SIG_DFL)


def _redirect_output(setup: ChildSetup, runtime: ChildRuntime) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(setup.out_fd, 1)
    os.dup2(setup.out_fd, 2)
    os.close(setup.out_fd)
    out = LineWriter(runtime.sink, 1, "stdout", "info")
    err = LineWriter(runtime.sink, 2, "stderr", "warn")
    runtime.writers = [out, err]
    sys.stdout, sys.stderr = out, err
    faulthandler.enable(file=2, all_threads=True)  # a segfault's Python traceback, as log


def _apply_limits(limits: dict[str, int]) -> None:
    for key, which, scale in (("address_space_mib", resource.RLIMIT_AS, MIB),
                              ("open_files", resource.RLIMIT_NOFILE, 1)):
        if key in limits:
            _, hard = resource.getrlimit(which)
            value = limits[key] * scale
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))


def _arm_cpu_limit(seconds: int) -> None:
    """RLIMIT_CPU counts the child's whole life: move the soft limit to now + SECONDS,
    so each job gets its own budget; past it the kernel sends SIGXCPU."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _start(setup: ChildSetup) -> ChildRuntime:
    global CURRENT
    _detach(setup)
    runtime = CURRENT = ChildRuntime(setup)
    set_title(child_title(setup.queue))  # while it is the only thread (proctitle.py)
    _redirect_output(setup, runtime)
    # the inherited objects are never collected here: freezing them keeps the collector
    # from touching (and so copying) every page shared with the fork server
    gc.freeze()
    _apply_limits(setup.limits)
    runtime.sender.send(pipes.READY)
    return runtime


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)  # as the interpreter does for sys.exit("message")
    return 1


def main(setup: ChildSetup) -> NoReturn:
    """The whole life of a child, right after the fork server's os.fork(); never returns."""
    try:
        runtime = _start(setup)
    except BaseException as exc:  # noqa: BLE001 - told to the supervisor, then exit
        try:
            text = f"{type(exc).__name__}: {exc}".encode(errors="replace")
            pipes.write_all(setup.msg_fd, pipes.frame(pipes.BROKEN, text))
        finally:
            os._exit(EXIT_INIT_FAILED)
    code = EXIT_INTERNAL
    try:
        runtime.serve()
        code = 0
    except SystemExit:
        code = runtime.exit_code
    except BaseException as exc:  # noqa: BLE001
        os.write(2, f"sandboxrunner child {os.getpid()} failed: {exc!r}\n".encode())
    finally:
        os._exit(code)
