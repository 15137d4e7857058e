"""One fork server process, as its supervisor knows it (`ServerProcess`): how it is
started, forked from a process that runs one thread (`fork_server`, the cheap way:
nothing is imported again) or spawned as a fresh interpreter that reads its setup and the
job specs from its stdin (`spawn_server`); its READY handshake, which drops from `known`
the specs it could not load; and how it is stopped and reaped. The supervisor's
`ForkServer` (forkserver.py) decides which start to use, asks the running server for
children and replaces it when it dies; the server's own side is in_forkserver.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import cloudpickle

from ..registry import JobSpec
from . import in_forkserver, pipes

# the ForkServer's logger: its lines keep the name they had before this module was split off
log = logging.getLogger("sandboxrunner.executors.forkserver")

START_TIMEOUT_S = 60.0  # a spawned server imports the jobs first
CLOSE_TIMEOUT_S = 5.0
SPAWN_COMMAND = "from sandboxrunner.executors.in_forkserver import run_spawned; run_spawned()"


class StartFailed(Exception):
    """A fork server did not reach READY (internal: logged, or raised as JobLoadError)."""


@dataclass(eq=False)
class ServerProcess:
    """One running fork server, as its supervisor knows it."""

    pid: int
    sock: socket.socket
    known: dict[str, JobSpec]  # the supervisor's specs the server holds too
    popen: subprocess.Popen[bytes] | None  # spawned; None when forked
    alive: bool = True

    def reap(self, timeout_s: float) -> str:
        """How it ended, once it did; '' if it still runs after TIMEOUT_S."""
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                return ended_how(self.popen.wait(timeout_s))
            return ""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return "reaped elsewhere"
            if pid:
                return ended_how(os.waitstatus_to_exitcode(status))
            if time.monotonic() >= deadline:
                return ""
            time.sleep(0.005)

    def kill(self) -> None:
        """SIGKILL it (it is our child and not reaped yet: the pid is its own)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Close its socket (EOF: it exits), and reap it; SIGKILL if it lingers."""
        self.alive = False
        self.sock.close()
        if not self.reap(CLOSE_TIMEOUT_S):
            self.kill()
            self.reap(CLOSE_TIMEOUT_S)


def fork_server(setup: in_forkserver.ServerSetup, specs: dict[str, JobSpec],
                ) -> ServerProcess:
    """Fork the server from this process, which runs one thread."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            in_forkserver.run_forked(setup, theirs, specs)
        finally:
            os._exit(1)
    theirs.close()
    server = handshake(ServerProcess(pid, ours, specs, None))
    log.debug("fork server (pid %d) forked from this process", pid)
    return server


def spawn_server(setup: in_forkserver.ServerSetup, specs: dict[str, JobSpec],
                 counters_fd: int) -> ServerProcess:
    """Start the server as a fresh interpreter; it reads its setup and the specs from
    its stdin (pickle: it is our child, the one trusted reader)."""
    blobs = {}
    for name, spec in specs.items():
        try:
            blobs[name] = cloudpickle.dumps(spec)
        except Exception as exc:  # noqa: BLE001 - cloudpickle raises many kinds
            log.warning("job %s cannot be sent to the fork server (cloudpickle failed: "
                        "%s); process mode will fail it", name, exc)
    payload = pickle.dumps((setup, blobs), pickle.HIGHEST_PROTOCOL)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        popen = subprocess.Popen(
            [sys.executable, "-c", SPAWN_COMMAND, str(theirs.fileno())],
            stdin=subprocess.PIPE, pass_fds=(theirs.fileno(), counters_fd),
            start_new_session=True)
    except OSError as exc:
        ours.close()
        raise StartFailed(f"could not run {sys.executable}: {exc}") from exc
    finally:
        theirs.close()
    assert popen.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # it died: the handshake says how
        popen.stdin.write(payload)
    with contextlib.suppress(BrokenPipeError):
        popen.stdin.close()
    known = {name: specs[name] for name in blobs}
    server = handshake(ServerProcess(popen.pid, ours, known, popen))
    log.debug("fork server (pid %d) spawned: this process runs threads", popen.pid)
    return server


def handshake(server: ServerProcess) -> ServerProcess:
    """Wait for SERVER's READY; drop the specs it could not load from `known`."""
    server.sock.settimeout(START_TIMEOUT_S)
    try:
        kind, body, fds = pipes.receive_message(server.sock)
        close_quietly(fds)
    except (OSError, pipes.ProtocolError) as exc:
        kind, body = 0, f"no answer ({exc})"
    if kind != pipes.READY:
        server.alive = False
        server.kill()
        how = server.reap(CLOSE_TIMEOUT_S)
        server.sock.close()
        why = body if kind == pipes.BROKEN else f"it exited ({how}) before it was ready"
        raise StartFailed(str(why))
    for name, why in dict(body.get("missing", {})).items():
        server.known.pop(name, None)
        log.warning("the fork server could not load job %s (%s): a child gets it with "
                    "each job instead", name, why)
    return server


def ended_how(code: int) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def close_quietly(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
