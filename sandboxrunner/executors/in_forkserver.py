"""Runs in the fork server: one single-threaded process per supervisor, holding the jobs
imported, that forks every child of the supervisor's process pools on request.

No child is forked from the threaded supervisor (CPython 3.12+ warns about that, and a
lock another thread held at the fork stays held in the child for ever); the fork server
starts before the supervisor runs any thread of its own, and runs none itself. It is
started one of two ways (forkserver.py decides):

  forked   from a process with one thread (`sandboxrunner start`, before any thread):
           the supervisor's memory, jobs included, comes along; `run_forked`
  spawned  from a threaded process (an app's in-process worker), and every restart: a
           fresh interpreter runs `run_spawned`, which reads a `ServerSetup` and the specs
           (cloudpickle) from its stdin, pickled by the supervisor (its parent: the one
           trusted writer), imports the job files and unpickles the specs, so jobs
           registered with register_job come along too

Then: its own session (a Ctrl-C or a signal to the supervisor's process group must not
kill the children of a supervisor that drains first), PR_SET_PDEATHSIG=SIGKILL so it dies
with the supervisor's thread that started it, READY, and one request at a time from its
socket (pipes.py): SPAWN forks a child (in_child.main), which gets its three pipe ends,
closes the server's socket and ties its own PR_SET_PDEATHSIG to this process's only
thread; REAP waits for a child the supervisor saw exit and answers its wait status. The
server never reaps on its own, so a child's pid and group id cannot be a stranger's while
the supervisor kills what is left of its group. EOF on the socket (the supervisor closed
it, or died): the server exits, and its children die with it.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import cloudpickle

from ..config import Config
from ..context import PoolSlots, SlotCounters
from ..errors import SandboxRunnerError
from ..proctitle import set_title
from ..registry import JobSpec, Registry, load_file_jobs
from . import in_child, pipes


@dataclass(frozen=True)
class ServerSetup:
    """What a fork server gets from its supervisor (pickled on a spawned one's stdin)."""

    config: Config
    # the supervisor's client factory, for the children's nested run_job: it has a
    # `with_registry` (client.ClientFactory), as the fork server has a registry of its own
    # (a spawned one gets the factory pickled without one)
    make_client: Any
    capacities: dict[str, int]  # pool size per queue (SlotCounters)
    counters_fd: int
    title: str
    supervisor_pid: int
    sys_path: list[str]
    jobs_dir: str | None  # where sandboxrunner_jobs.* come from


class ForkServerState:
    """The fork server's own state: the specs its children get, and its socket."""

    def __init__(self, setup: ServerSetup, sock: socket.socket,
                 specs: dict[str, JobSpec]) -> None:
        self.setup, self.sock, self.specs = setup, sock, specs
        registry = Registry(specs, Path(setup.jobs_dir) if setup.jobs_dir else None)
        factory = setup.make_client
        self.make_client = factory.with_registry(registry) if factory is not None else None
        self.counters = SlotCounters(setup.capacities, setup.counters_fd)

    def serve(self) -> NoReturn:
        """Answer requests until the supervisor closes the socket or dies."""
        while True:
            try:
                kind, body, fds = pipes.receive_message(self.sock)
            except (OSError, pipes.ProtocolError):
                os._exit(1)
            if kind == pipes.SPAWN:
                reply = self.spawn(body, fds)
            elif kind == pipes.REAP:
                reply = self.reap(int(body[0]))
            elif kind == 0:
                os._exit(0)  # the children die with us (PR_SET_PDEATHSIG)
            else:
                os._exit(1)
            pipes.send_message(self.sock, *reply)

    def spawn(self, body: Any, fds: list[int]) -> tuple[int, Any]:
        queue, slot = str(body[0]), int(body[1])
        if len(fds) != pipes.CHILD_FDS or queue not in self.setup.capacities:
            _close(fds)
            return pipes.FAILED, f"a malformed SPAWN request for queue {queue!r}"
        cmd_r, msg_w, out_w = fds
        setup = in_child.ChildSetup(
            queue=queue, cmd_fd=cmd_r, msg_fd=msg_w, out_fd=out_w,
            inherited_fds=(self.sock.fileno(), self.counters.fd), parent_pid=os.getpid(),
            specs=self.specs, log_max_lines=self.setup.config.log_max_lines,
            limits=dict(self.setup.config.child_limits or {}), make_client=self.make_client,
            slots=PoolSlots(queue, self.setup.capacities[queue], self.counters.of(queue),
                            slot))
        try:
            pid = os.fork()
        except OSError as exc:
            _close(fds)
            return pipes.FAILED, f"fork failed: {exc}"
        if pid == 0:
            in_child.main(setup)  # never returns
        _close(fds)
        return pipes.SPAWNED, [pid]

    def reap(self, pid: int) -> tuple[int, Any]:
        try:
            status: int | None = os.waitpid(pid, 0)[1]
        except ChildProcessError:
            status = None
        return pipes.REAPED, [pid, status]


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _become_server(setup: ServerSetup, new_session: bool) -> None:
    if new_session:
        os.setsid()
    in_child.die_with_parent(setup.supervisor_pid)
    # Python handlers a forked server kept from the supervisor (pytest's) mean nothing here
    for sig in signal.valid_signals():
        if callable(signal.getsignal(sig)):
            signal.signal(sig, signal.SIG_DFL)
    set_title(setup.title)


def _serve_or_die(sock: socket.socket,
                  start: Callable[[], tuple[ForkServerState, dict[str, str]]]) -> NoReturn:
    """Run START (which returns the server's state), say READY, serve; a failure to
    start is told to the supervisor as BROKEN, and the server exits."""
    try:
        state, missing = start()
        gc.freeze()  # the children share these pages: keep the collector off them
        pipes.send_message(sock, pipes.READY, {"missing": missing})
    except BaseException as exc:  # noqa: BLE001 - told to the supervisor, then exit
        try:
            text = str(exc) if isinstance(exc, SandboxRunnerError) else \
                "".join(traceback.format_exception_only(type(exc), exc)).strip()
            pipes.send_message(sock, pipes.BROKEN, text[:pipes.MAX_MESSAGE // 2])
        finally:
            os._exit(1)
    state.serve()


def run_forked(setup: ServerSetup, sock: socket.socket, specs: dict[str, JobSpec]) -> NoReturn:
    """The fork server's life right after the supervisor's os.fork(); never returns."""
    def start() -> tuple[ForkServerState, dict[str, str]]:
        _become_server(setup, new_session=True)
        return ForkServerState(setup, sock, specs), {}

    try:
        _serve_or_die(sock, start)
    finally:
        os._exit(1)


def run_spawned() -> NoReturn:
    """The fork server's life in a fresh interpreter (`python -c`); never returns."""
    sock = socket.socket(fileno=int(sys.argv[1]))

    def start() -> tuple[ForkServerState, dict[str, str]]:
        setup, blobs = pickle.load(sys.stdin.buffer)  # trusted: supervisor pipe
        _become_server(setup, new_session=False)  # Popen(start_new_session=True) did it
        sys.path[:] = setup.sys_path
        specs, missing = _load_specs(setup, blobs)
        return ForkServerState(setup, sock, specs), missing

    try:
        _serve_or_die(sock, start)
    finally:
        os._exit(1)


def _load_specs(setup: ServerSetup, blobs: dict[str, bytes]) -> tuple[dict[str, JobSpec],
                                                                   dict[str, str]]:
    """The supervisor's specs, and why each one that would not load did not (a child
    then gets it with each job, as it gets a job registered after the start)."""
    if setup.jobs_dir:
        # the package sandboxrunner_jobs the job files' handlers are pickled by reference
        # into; the supervisor already logged what loading them says
        logging.getLogger("sandboxrunner").setLevel(logging.ERROR)
        load_file_jobs(Path(setup.jobs_dir))
    specs: dict[str, JobSpec] = {}
    missing: dict[str, str] = {}
    for name, blob in blobs.items():
        try:
            specs[name] = cloudpickle.loads(blob)  # trusted: supervisor pipe
        except Exception as exc:  # noqa: BLE001 - any import error of the user's code
            missing[name] = f"{type(exc).__name__}: {exc}"
    return specs, missing
