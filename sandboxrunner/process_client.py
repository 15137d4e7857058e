"""The client a process's calls use, and the module-level functions that use it (run_job,
enqueue, enqueue_many, get_result and their asyncio twins; job_control.py, job_listing.py and
queue_control.py have the others).

Which client the module-level functions use: inside a job, the one its supervisor's
`ClientFactory` makes (whoever starts a supervisor hands it one, so the worker side never
imports client.py); elsewhere the process's own, installed with `set_default_client`
(init_worker, ``sandboxrunner run``) or built from the project's config on first use.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Sequence
from typing import Any, cast

from .client import Client, JobHandle
from .config import Config, load_config
from .connection import resolve_redis_url
from .context import current_job
from .job_control import ProgressCallback
from .registry import Registry, load_project_registry


class ClientFactory:
    """Makes the client of the calls that jobs make: one per process, made on first use
    (a forked child makes its own). A supervisor is handed one at start and hands it to
    its executors; they put it in each job's context, or give it to their children."""

    def __init__(self, config: Config, registry: Registry | None, url: str) -> None:
        self.config, self.registry, self.url = config, registry, url
        self._made: tuple[int, Client] | None = None

    def with_registry(self, registry: Registry) -> ClientFactory:
        """This factory over another registry: a fork server's, holding the same jobs."""
        return ClientFactory(self.config, registry, self.url)

    def __reduce__(self) -> tuple[Any, ...]:
        # a spawned fork server gets the factory pickled: what it made stays here, and the
        # registry (handlers need cloudpickle) is the fork server's own (with_registry)
        return (ClientFactory, (self.config, None, self.url))

    def __call__(self) -> Client:
        made = self._made_here()
        if made is not None:
            return made
        with _default_lock:
            if self._made_here() is None:
                assert self.registry is not None, "a pickled factory needs with_registry()"
                self._made = (os.getpid(), Client(self.config, self.registry, self.url))
            return cast(Client, self._made_here())

    def _made_here(self) -> Client | None:
        made = self._made
        return made[1] if made is not None and made[0] == os.getpid() else None

    def close(self) -> None:
        """Close the client made in this process, if one was."""
        client = self._made_here()
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close what the client made in this process holds for the running event loop
        (an executor does before it closes its loop)."""
        client = self._made_here()
        if client is not None:
            await client.aclose()


# -- the process's default client ------------------------------------------------------
_default: tuple[int, Client] | None = None
_default_lock = threading.Lock()  # guards the making of this process's clients


def _new_lock_after_fork() -> None:
    global _default_lock
    _default_lock = threading.Lock()  # a thread of the parent may have held it


os.register_at_fork(after_in_child=_new_lock_after_fork)


def default_client() -> Client:
    """The client of the module-level functions (module docstring)."""
    ctx = current_job.get()
    if ctx is not None and ctx.make_client is not None:
        return cast(Client, ctx.make_client())
    global _default
    with _default_lock:
        if _default is None or _default[0] != os.getpid():  # a forked child builds its own
            config = load_config()
            registry = load_project_registry(config)
            _default = (os.getpid(), Client(config, registry, resolve_redis_url(config)))
        return _default[1]


def set_default_client(client: Client | None) -> None:
    """Use CLIENT for the module-level functions (init_worker and tests do)."""
    global _default
    with _default_lock:
        _default = (os.getpid(), client) if client is not None else None


def drop_default_client(client: Client) -> None:
    """Stop using CLIENT for the module-level functions, if they still do (another may
    have been installed meanwhile); the next call builds one from the project's config."""
    global _default
    with _default_lock:
        if _default is not None and _default[1] is client:
            _default = None


def run_job(name: str, data: Any = None, timeout: int | None = None,
            wait_timeout: int | None = None, retries: int | None = None, *,
            on_progress: ProgressCallback | None = None, delay: int | None = None,
            run_at: dt.datetime | None = None, job_id: str | None = None) -> Any:
    """Run job NAME with DATA, wait, and return its result (or raise its error);
    ON_PROGRESS(JobProgress) hears the job's ctx.progress reports meanwhile. DELAY (ms)
    or RUN_AT (an aware datetime) runs it later; JOB_ID is an idempotency key."""
    return default_client().run_job(name, data, timeout, wait_timeout, retries,
                                    on_progress=on_progress, delay=delay, run_at=run_at,
                                    job_id=job_id)


async def arun_job(name: str, data: Any = None, timeout: int | None = None,
                   wait_timeout: int | None = None, retries: int | None = None, *,
                   on_progress: ProgressCallback | None = None, delay: int | None = None,
                   run_at: dt.datetime | None = None, job_id: str | None = None) -> Any:
    """The asyncio twin of run_job."""
    return await default_client().arun_job(name, data, timeout, wait_timeout, retries,
                                           on_progress=on_progress, delay=delay,
                                           run_at=run_at, job_id=job_id)


def enqueue(name: str, data: Any = None, timeout: int | None = None,
            retries: int | None = None, *, delay: int | None = None,
            run_at: dt.datetime | None = None, job_id: str | None = None) -> JobHandle:
    """Enqueue job NAME without waiting; the handle fetches the result later. DELAY (ms)
    or RUN_AT (an aware datetime) runs it later; JOB_ID is an idempotency key: the
    handle's id is then ``QUEUE-JOB_ID``, and the same key again returns the same job."""
    return default_client().enqueue(name, data, timeout, retries, delay=delay,
                                    run_at=run_at, job_id=job_id)


async def aenqueue(name: str, data: Any = None, timeout: int | None = None,
                   retries: int | None = None, *, delay: int | None = None,
                   run_at: dt.datetime | None = None, job_id: str | None = None) -> JobHandle:
    """The asyncio twin of enqueue: the event loop is not blocked while Redis answers, and
    calls made in the same loop iteration go to Redis in one write."""
    return await default_client().aenqueue(name, data, timeout, retries, delay=delay,
                                           run_at=run_at, job_id=job_id)


def enqueue_many(name: str, items: Sequence[Any], timeout: int | None = None,
                 retries: int | None = None) -> list[JobHandle]:
    """Enqueue one job NAME per item of ITEMS (its data) in one round trip, all or none
    (bulk.py); a handle per item, in order."""
    return default_client().enqueue_many(name, items, timeout, retries)


async def aenqueue_many(name: str, items: Sequence[Any], timeout: int | None = None,
                        retries: int | None = None) -> list[JobHandle]:
    """The asyncio twin of enqueue_many."""
    return await default_client().aenqueue_many(name, items, timeout, retries)


def get_result(job_id: str, wait_timeout: int | None = None) -> Any:
    """Wait for the job with this id (from any process) and return or raise its outcome."""
    return default_client().get_result(job_id, wait_timeout)
