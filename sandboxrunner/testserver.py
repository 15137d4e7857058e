"""`TestServer`: a throwaway Redis-protocol server that tests and benchmarks start and
stop, our child in a directory of its own (`server_process.py` has the binary, the
arguments, readiness, shutdown and kill it shares with the per-project server of
embedded.py)."""

from __future__ import annotations

import atexit
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .errors import RedisUnavailable
from .server_process import (
    HOST,
    READY_TIMEOUT_S,
    START_ATTEMPTS,
    STOP_TIMEOUT_S,
    Outcome,
    await_server,
    describe_outcome,
    free_port,
    log_size,
    log_tail,
    server_argv,
    shutdown,
)


class TestServer:
    """A throwaway server for tests and benchmarks: our child, in its own directory."""

    __test__ = False  # its name starts with "Test"; keep pytest from collecting it

    def __init__(self, dir: Path, *, persist: bool = False, port: int | None = None,
                 pick_port: Callable[[], int] = free_port,
                 options: dict[str, str] | None = None, binary: Path | None = None,
                 config: str = "", sentinel: bool = False) -> None:
        """PORT: the one port to listen on (one start attempt); else PICK_PORT picks one
        for each attempt (a port taken between its pick and the server's bind costs an
        attempt, not the start). OPTIONS: extra server settings, e.g. {"requirepass": ...}
        (the URL then carries the password) or {"enable-debug-command": "yes"}. BINARY:
        the server to run (else `server_binary()`'s); CONFIG: the text of a config file it
        starts from (a Sentinel rewrites its own); SENTINEL: run it as a Sentinel."""
        self.dir = Path(dir)
        self.persist = persist
        self.options = dict(options or {})
        self.binary, self.config, self.sentinel = binary, config, sentinel
        self.port: int = port or 0
        self._pick_port = pick_port
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
                self.port = self._pick_port()
            offset = log_size(self.log_path)
            outcome = self._launch()
            if outcome == "ready":
                return self
            self.kill()
            if outcome in ("timeout", "loading"):
                break
        raise RedisUnavailable(
            f"test server on {HOST}:{self.port} in {self.dir} "
            f"{describe_outcome(outcome, attempts)}; "
            f"end of {self.log_path}:\n{log_tail(self.log_path, offset)}")

    def stop(self) -> None:
        """SHUTDOWN (SAVE if persist, else NOSAVE) and reap; SIGKILL if that hangs."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            shutdown(self.port, save=self.persist, password=self.options.get("requirepass"))
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
        argv = server_argv(self.port, self.dir, self.log_path, aof=self.persist)
        if self.binary is not None:
            argv[0] = str(self.binary)
        if self.config or self.sentinel:  # a config file comes first, then the options
            config_path = self.dir / "server.conf"
            if not config_path.exists():  # a restarted Sentinel keeps what it rewrote
                config_path.write_text(self.config)
            argv[1:1] = [str(config_path), *(["--sentinel"] if self.sentinel else [])]
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
        return await_server(self.port, proc.pid, lambda: proc.poll() is None, READY_TIMEOUT_S,
                             password=self.options.get("requirepass"))
