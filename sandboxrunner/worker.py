"""A supervisor inside the calling process: `init_worker`, its handle, and the auto-start rule.

`init_worker(**overrides)` does in an app process what ``sandboxrunner start`` does in a
dedicated one: it loads the config (the same layers as the CLI, the keyword arguments
winning), loads the jobs, resolves Redis (starting the embedded server if no REDIS_URL is
set), starts a `Supervisor` on background threads (with ``use_separate_process`` also its
own pool of children), which syncs the cron schedules, and makes this process's
`run_job` use the same config and jobs. It returns a `Worker` handle.

One worker per process. A second call returns the running handle (a warning is logged if
it asked for different overrides, which are then ignored); after `Worker.stop` a call
starts a fresh one. A forked child does not inherit the running worker (threads do not
survive fork): calling `init_worker` there starts the child's own.

The process exit stops a worker that is still running, letting its jobs finish for up to
``grace_period`` ms, as SIGTERM does for ``sandboxrunner start``.

asyncio apps: starting does blocking work (imports job files, may start the embedded
server, talks to Redis, forks children), so call it off the event loop with
``await asyncio.to_thread(init_worker)``; stop with ``await worker.astop()`` or
``async with``, which drain on a thread too. `sandboxrunner.integrations.lifespan` does
both for FastAPI and Starlette.

`should_auto_start` is the rule the app integrations apply before starting; the CLI's
``start`` ignores it because a dedicated worker service always starts.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from .config import Config, load_config
from .connection import check_reachable, resolve_redis_url
from .process_client import ClientFactory, drop_default_client, set_default_client
from .redis_errors import REDIS_ERRORS, translate
from .registry import Registry, load_project_registry
from .supervisor import Supervisor

log = logging.getLogger(__name__)

_lock = threading.Lock()
_current: Worker | None = None


def should_auto_start(config: Config) -> bool:
    """Whether an app process should start its own worker: auto_start is on, and either
    this is not production or auto_start_production is on too."""
    if not config.auto_start:
        return False
    return config.auto_start_production or not config.production


class Worker:
    """The supervisor running inside this process; stop it with `stop` or `astop`."""

    def __init__(self, config: Config, registry: Registry, url: str,
                 overrides: Mapping[str, Any]) -> None:
        self.config = config
        self.registry = registry
        self.url = url
        self.overrides = dict(overrides)
        self.pid = os.getpid()
        # the calls of this process and of its jobs share one client (a child makes its own)
        self._make_client = ClientFactory(config, registry, url)
        self.client = self._make_client()
        self.supervisor = Supervisor(config, registry, url, make_client=self._make_client)
        self._stopped = False
        self._stop_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return not self._stopped and self.pid == os.getpid()

    def stop(self, grace_ms: int | None = None) -> None:
        """Stop claiming, let running jobs finish for up to grace_ms (default: the
        config's grace_period), hand back the rest, remove the supervisor from Redis and
        close this worker's client. Safe to call more than once."""
        global _current
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        with _lock:
            if _current is self:
                _current = None
        if self.pid != os.getpid():
            return  # a forked copy of the handle: the threads belong to the parent
        try:
            self.supervisor.stop(grace_ms)
        finally:
            drop_default_client(self.client)
            self.client.close()
            log.info("in-process worker %s stopped", self.supervisor.sid)

    async def astop(self, grace_ms: int | None = None) -> None:
        """`stop` without blocking the event loop; also closes this loop's connections."""
        try:
            await asyncio.to_thread(self.stop, grace_ms)
        finally:
            await self.client.aclose()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.astop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<Worker {self.supervisor.sid} {state}: queues {','.join(self.config.workers)}, "
                f"{self.supervisor.mode} mode>")


def init_worker(**overrides: Any) -> Worker:
    """Start serving jobs inside this process and return the handle (see module doc).

    Keyword arguments are config keys (``workers``, ``concurrency``,
    ``use_separate_process``, ``redis_url``, ...); None means "not given". Raises
    ConfigError, JobLoadError, RedisUnavailable or RedisRefused (redis_errors.py) before
    anything is started.
    """
    global _current
    with _lock:
        current = _current
        if current is not None and current.running:
            _warn_if_different(current, overrides)
            return current
        worker = _start(overrides)
        _current = worker
        return worker


def current_worker() -> Worker | None:
    """The worker running in this process, if any."""
    with _lock:
        worker = _current
    return worker if worker is not None and worker.running else None


def _start(overrides: Mapping[str, Any]) -> Worker:
    config = load_config(overrides)
    registry = load_project_registry(config)
    url = resolve_redis_url(config)
    check_reachable(url)
    worker = Worker(config, registry, url, overrides)
    try:
        worker.supervisor.start()
    except BaseException as exc:
        worker.supervisor.stop(grace_ms=0)
        worker.client.close()
        if isinstance(exc, REDIS_ERRORS):  # the API's boundary: our error (redis_errors.py)
            raise translate(exc, url, "start a worker", config.key_prefix) from exc
        raise
    set_default_client(worker.client)
    log.info("in-process worker %s started: queues %s, %s mode, %d job(s)",
             worker.supervisor.sid, ",".join(config.workers), worker.supervisor.mode,
             len(registry.names()))
    return worker


def _warn_if_different(worker: Worker, overrides: Mapping[str, Any]) -> None:
    """Warn when a second call asks for settings the running worker does not have; a call
    asking for none gets the running worker, as it asked."""
    given = {k: v for k, v in overrides.items() if v is not None}
    running = {k: v for k, v in worker.overrides.items() if v is not None}
    if not given or given == running:
        return
    kept = (f"its own settings {running!r}" if running else
            "the settings it started with (the project's configuration, no overrides)")
    log.warning("init_worker called again with different settings %r; the worker already "
                "running in this process keeps %s (stop it first to change them)",
                given, kept)


def _forget_after_fork() -> None:
    # A forked child has none of the parent's threads, and the lock may have been held
    # by one of them at the fork: start the child from a clean slate.
    global _lock, _current
    _lock = threading.Lock()
    _current = None


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _stop_at_exit() -> None:
    worker = current_worker()
    if worker is not None:
        worker.stop()
