"""The supervisor's side of its fork server: asking it for children and reaping them
through it, and replacing it when it dies (how one server process is started, handshaken
and stopped: forkserver_process.py; its own side: in_forkserver.py; the design and its
reasons: executors/__init__.py).

One fork server per supervisor, shared by its pools over one socket; each request is
answered before the next is sent, under `_lock`. Forked when the process has one thread
(`may_fork_here`, the operating system's count, which CPython's warning counts too),
else spawned by the thread sr-forkserver, which lives as long as the supervisor (the
fork server's PR_SET_PDEATHSIG follows the thread that started it). That thread also
watches the server's socket: when the server dies, it reaps it, logs an error and
spawns a new one, after a growing delay if they keep dying; meanwhile `spawn` raises
ForkServerUnavailable at once, and the pools are woken when the new one is ready.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..context import SlotCounters
from ..errors import JobLoadError
from ..proctitle import fork_server_title
from ..registry import Registry
from . import in_forkserver, pipes
from .deaths import RespawnLimiter
from .forkserver_process import (
    CLOSE_TIMEOUT_S,
    START_TIMEOUT_S,
    ServerProcess,
    StartFailed,
    close_quietly,
    fork_server,
    spawn_server,
)
from .process_tree import open_pidfd

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0  # a server that takes longer to fork is killed and replaced


class ForkServerUnavailable(Exception):
    """The fork server is being replaced (internal: the pool asks again once woken)."""


def may_fork_here() -> bool:
    """Whether this process runs one thread, so a fork copies no lock held by another."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


@dataclass(frozen=True)
class Spawned:
    """A child the fork server forked, with the supervisor's ends of its pipes."""

    pid: int
    cmd_fd: int
    msg_fd: int
    out_fd: int
    pidfd: int
    server: ServerProcess


class ForkServer:
    """A supervisor's fork server: one at a time, replaced when it dies."""

    def __init__(self, config: Config, registry: Registry, make_client: Any,
                 queues: tuple[str, ...]) -> None:
        """MAKE_CLIENT: the supervisor's client factory (a nested run_job in a child uses
        it, rebuilt over the fork server's own registry: see in_forkserver.ServerSetup)."""
        self.config, self.registry, self.make_client = config, registry, make_client
        self.counters = SlotCounters({q: config.effective_concurrency() for q in queues})
        self._lock = threading.Lock()  # held for a whole request and its answer
        self._current: ServerProcess | None = None
        self._listeners: list[Callable[[], None]] = []
        self._limiter = RespawnLimiter(max_deaths=3)
        self._closed = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._started = threading.Event()
        self._start_error = ""
        forked = may_fork_here()
        if forked:  # before any thread: the cheap way, nothing imported again
            try:
                self._current = self._fork()
            except StartFailed as exc:
                self._start_error = str(exc)
            self._started.set()
        self._thread = threading.Thread(target=self._watch, name="sr-forkserver", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._current is None:
            self.close()
            how = "" if forked else (" (a fresh interpreter, as this process runs threads: "
                                     "each job file must import on its own, as under "
                                     "`sandboxrunner start`)")
            raise JobLoadError(f"the fork server of the process pool{how} did not start: "
                               f"{self._start_error}")

    # -- requests from the pools -------------------------------------------------------
    def spawn(self, queue: str, slot: int) -> Spawned:
        """A new child for QUEUE's pool, using nested-call counter SLOT. Raises
        ForkServerUnavailable while the server is replaced, OSError if the fork failed."""
        (cmd_r, cmd_w), (msg_r, msg_w), (out_r, out_w) = os.pipe(), os.pipe(), os.pipe()
        ours = [cmd_w, msg_r, out_r]
        try:
            with self._lock:
                server = self._live()
                kind, body = self._ask(server, pipes.SPAWN, [queue, slot],
                                       (cmd_r, msg_w, out_w))
            if kind != pipes.SPAWNED:
                raise OSError(f"the fork server could not fork: {body}")
        except BaseException:
            close_quietly(ours)
            raise
        finally:
            close_quietly([cmd_r, msg_w, out_w])  # the child's ends: it has them now
        pid = int(body[0])
        return Spawned(pid, cmd_w, msg_r, out_r, open_pidfd(pid), server)

    def reap(self, pid: int, server: ServerProcess) -> int | None:
        """The wait status of child PID, which exited; None if SERVER (its parent) died,
        and took its children's statuses along."""
        with self._lock:
            if not server.alive:
                return None
            try:
                kind, body = self._ask(server, pipes.REAP, [pid])
            except ForkServerUnavailable:
                return None
        return body[1] if kind == pipes.REAPED and body[0] == pid else None

    def on_ready(self, listener: Callable[[], None]) -> None:
        """Call LISTENER (from the watching thread) whenever a new server is ready."""
        with self._lock:
            self._listeners.append(listener)

    def forget(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @property
    def pid(self) -> int | None:
        """The running fork server's pid (None while it is replaced)."""
        server = self._current
        return server.pid if server is not None and server.alive else None

    def _live(self) -> ServerProcess:
        server = self._current
        if server is None or not server.alive:
            raise ForkServerUnavailable("the fork server is being replaced")
        return server

    def _ask(self, server: ServerProcess, kind: int, body: Any,
             fds: tuple[int, ...] = ()) -> tuple[int, Any]:
        """Send one request and read its answer (lock held)."""
        try:
            pipes.send_message(server.sock, kind, body, fds)
            reply, answer, extra = pipes.receive_message(server.sock)
        except (OSError, pipes.ProtocolError) as exc:
            broken = isinstance(exc, TimeoutError | pipes.ProtocolError)
            self._give_up_on(server, f"did not answer properly ({exc})" if broken else "")
            raise ForkServerUnavailable(str(exc)) from exc
        close_quietly(extra)
        if reply == 0:
            self._give_up_on(server, "")  # it died: the watching thread says so
            raise ForkServerUnavailable("the fork server died")
        return reply, answer

    def _give_up_on(self, server: ServerProcess, why: str) -> None:
        """Never ask SERVER again, and kill it: the watching thread replaces it (lock
        held, so it is not reaped yet and its pid is its own)."""
        if not server.alive:
            return
        server.alive = False
        if why:
            log.error("the fork server (pid %d) %s: killing it and starting a new one",
                      server.pid, why)
        server.kill()

    # -- starting, watching, replacing -------------------------------------------------
    def _watch(self) -> None:
        """The thread sr-forkserver: start the server if it was not forked, then wait for
        its death (or the close) and replace it."""
        if self._current is None:
            try:
                server = self._spawn()
            except StartFailed as exc:
                self._start_error = str(exc)
                self._started.set()
                return
            self._current = server
            self._started.set()
        while (server := self._current) is not None and self._wait_for_death(server):
            self._replace(server)

    def _wait_for_death(self, server: ServerProcess) -> bool:
        """Block until SERVER's end of the socket closes (True) or `close` (False)."""
        poller = select.poll()
        poller.register(server.sock.fileno(), select.POLLRDHUP)  # HUP comes regardless
        poller.register(self._wake_r, select.POLLIN)
        while True:
            for fd, _events in poller.poll():
                return fd != self._wake_r

    def _replace(self, dead: ServerProcess) -> None:
        with self._lock:
            dead.alive = False
            self._current = None
        how = dead.reap(CLOSE_TIMEOUT_S) or "it does not exit"
        dead.sock.close()
        log.error("the fork server (pid %d) of this supervisor died (%s), and the children "
                  "it forked with it: starting a new one", dead.pid, how)
        delay = self._limiter.record(time.monotonic())
        while not self._closed.wait(delay):
            try:
                server = self._spawn()
            except StartFailed as exc:
                delay = max(self._limiter.record(time.monotonic()), 1.0)
                log.error("could not start a new fork server (%s); trying again in %.1f s",
                          exc, delay)
                continue
            with self._lock:
                if self._closed.is_set():  # closed while it started: `close` missed it
                    server.stop()
                    return
                self._current = server
                listeners = list(self._listeners)
            log.info("fork server (pid %d) started, replacing pid %d", server.pid, dead.pid)
            for listener in listeners:
                listener()
            return

    def _setup(self) -> in_forkserver.ServerSetup:
        jobs_dir = self.registry.jobs_dir
        return in_forkserver.ServerSetup(
            config=self.config, make_client=self.make_client,
            capacities=self.counters.capacities, counters_fd=self.counters.fd,
            title=fork_server_title(self.config), supervisor_pid=os.getpid(),
            sys_path=list(sys.path), jobs_dir=str(jobs_dir) if jobs_dir else None)

    def _fork(self) -> ServerProcess:
        return self._serving(fork_server(self._setup(), dict(self.registry.jobs)))

    def _spawn(self) -> ServerProcess:
        return self._serving(spawn_server(self._setup(), dict(self.registry.jobs),
                                          self.counters.fd))

    @staticmethod
    def _serving(server: ServerProcess) -> ServerProcess:
        """SERVER, ready: from now on a request it does not answer in time replaces it."""
        server.sock.settimeout(REQUEST_TIMEOUT_S)
        return server

    # -- closing -----------------------------------------------------------------------
    def close(self) -> None:
        """Stop the fork server (its pools have closed: it has no children left)."""
        if self._closed.is_set():
            return
        self._closed.set()
        os.write(self._wake_w, b"x")
        self._thread.join(START_TIMEOUT_S)
        with self._lock:
            server, self._current = self._current, None
            self._listeners.clear()
            if server is not None:
                server.stop()
        if not self._thread.is_alive():
            close_quietly([self._wake_r, self._wake_w])
        self.counters.close()
