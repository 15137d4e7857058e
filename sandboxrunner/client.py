"""Calling jobs: run_job, arun_job, enqueue, get_result.

A call validates everything before anything reaches Redis (known name, JSON data under
the size limit, a positive timeout, a JSON singleton key), then enqueues with one script
call naming the listener's client id as the one to notify, and waits on that listener:
the process's shared `Listener` for threads, the event loop's own `AsyncListener` for
asyncio callers.

Waiting never hangs silently. ``wait_timeout`` (ms) bounds the whole wait when given;
by default a caller waits as long as the job needs, but if no live supervisor serves the
job's queue for a whole lease (config ``lease_ms``, 10 s by default) the call raises
`NoSupervisor`; the job stays queued and runs once a supervisor starts. While waiting,
the caller re-reads the job's state once per lease, which also covers a result published
while the listener was reconnecting.

Redis outages: a waiting caller keeps waiting while Redis is unreachable (the listener
reconnects with backoff and re-reads what it missed). Before it waits, every call (run_job,
enqueue, get_result and their asyncio twins: the subscribe, the enqueue, the first read)
follows one rule, `connection.RedisRetry`, while Redis is unreachable or still loading its
data: retry with backoff for up to ENQUEUE_RETRY_S (bounded by ``wait_timeout``), then
raise `RedisUnavailable`. The job id is chosen before the first try, so a retry whose first
try got through attaches to that job instead of enqueueing it twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import redis

from .async_store import AsyncStore
from .calls import prepare_call
from .config import Config, load_config, project_hint
from .connection import RedisRetry, aretrying, caller_retry, reason, retrying
from .context import current_job
from .errors import ConfigError, DeadlockError, JobNotFound, WaitTimeout
from .job import Outcome, PreparedJob
from .keys import queue_of_job
from .listener import AsyncListener, Listener, Waiter
from .registry import Registry, load_project_registry
from .store import Store
from .supervision import JobWatch, no_supervisor

log = logging.getLogger(__name__)

ENQUEUE_RETRY_S = 10.0  # how long a call waits for an unreachable (or loading) Redis


class Client:
    """Enqueues and waits; one per process is created on demand by the module functions."""

    def __init__(self, config: Config, registry: Registry, url: str) -> None:
        self.config = config
        self.registry = registry
        self.url = url
        self.store = Store(config, url, retry=caller_retry())
        self._listener: Listener | None = None
        self._lock = threading.Lock()
        self._async_listeners: dict[int, AsyncListener] = {}

    @property
    def listener(self) -> Listener:
        with self._lock:
            if self._listener is None:
                self._listener = Listener(self.store)
            return self._listener

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.store.close()

    async def aclose(self) -> None:
        """Close the connections this client holds for the running event loop."""
        listener = self._async_listeners.pop(id(asyncio.get_running_loop()), None)
        if listener is not None:
            await listener.close()
            await listener.store.close()

    # -- preparing -------------------------------------------------------------------
    def prepare(self, name: str, data: Any, timeout: int | None,
                retries: int | None = None) -> PreparedJob:
        return prepare_call(self.registry.get(name), data, timeout, retries, self.config)

    def _retry(self, doing: str, wait_timeout: int | None) -> RedisRetry:
        """The rule for this call while Redis does not answer: retry up to
        ENQUEUE_RETRY_S (bounded by wait_timeout), then RedisUnavailable."""
        limit_s = ENQUEUE_RETRY_S
        if wait_timeout is not None:
            limit_s = min(limit_s, wait_timeout / 1000)
        return RedisRetry(self.url, doing, limit_s)

    # -- sync ------------------------------------------------------------------------
    def run_job(self, name: str, data: Any = None, timeout: int | None = None,
                wait_timeout: int | None = None, retries: int | None = None) -> Any:
        job = self.prepare(name, data, timeout, retries)
        retry = self._retry(f"enqueue job {job.name!r}", wait_timeout)
        self._check_nested(job.queue, retry)
        listener = retrying(lambda: self.listener, retry)  # subscribed before the job exists
        waiter = Waiter()
        listener.register(job.job_id, waiter)
        try:
            result = retrying(lambda: self.store.enqueue(job, listener.cid), retry)
        except BaseException:
            listener.unregister(job.job_id, waiter)
            raise
        job_id = result.job_id
        if result.attached:
            listener.unregister(job.job_id, waiter)
            listener.register(job_id, waiter)
            self._collect_if_settled(job_id, retry)
        if result.live_supervisors == 0:
            log.warning("no supervisor serves queue %r yet; job %s waits up to %d ms for one "
                        "(`sandboxrunner start`)", job.queue, job_id, self.config.lease_ms)
        with _nested_wait(job.queue):
            outcome = self._wait(job_id, waiter, wait_timeout, result.live_supervisors)
        return outcome.named(job.name).value()

    def enqueue(self, name: str, data: Any = None, timeout: int | None = None,
                retries: int | None = None) -> JobHandle:
        job = self.prepare(name, data, timeout, retries)
        retry = self._retry(f"enqueue job {job.name!r}", None)
        result = retrying(lambda: self.store.enqueue(job), retry)
        return JobHandle(result.job_id, self)

    def get_result(self, job_id: str, wait_timeout: int | None = None) -> Any:
        _check_job_id(job_id)
        retry = self._retry(f"fetch the result of job {job_id}", wait_timeout)
        listener = retrying(lambda: self.listener, retry)
        waiter = Waiter()
        listener.register(job_id, waiter)
        try:
            got = retrying(lambda: self.store.attach(job_id, listener.cid), retry)
        except BaseException:
            listener.unregister(job_id, waiter)
            raise
        if isinstance(got, Outcome):
            listener.unregister(job_id, waiter)
            return got.value()
        if got == "":
            listener.unregister(job_id, waiter)
            raise self._not_found(job_id)
        outcome = self._wait(job_id, waiter, wait_timeout, 1)
        return outcome.value()

    def _not_found(self, job_id: str) -> JobNotFound:
        return JobNotFound(f"no job {job_id}: never enqueued, or its result expired "
                           f"(result_ttl {self.config.result_ttl} ms)")

    def _collect_if_settled(self, job_id: str, retry: RedisRetry) -> None:
        """Deliver the outcome of a job attached to if it settled before our waiter was
        registered: its one reply message may have gone to another waiter of this process."""
        got = retrying(lambda: self.store.attach(job_id, self.listener.cid), retry)
        if isinstance(got, Outcome):
            self.listener.deliver(got)

    def _wait(self, job_id: str, waiter: Waiter, wait_timeout: int | None,
              live: int) -> Outcome:
        started = time.monotonic()
        check_s = self.config.lease_ms / 1000
        while True:
            slice_s = check_s
            if wait_timeout is not None:
                left = wait_timeout / 1000 - (time.monotonic() - started)
                if left <= 0:
                    self.listener.unregister(job_id, waiter)
                    raise WaitTimeout(job_id, wait_timeout)
                slice_s = min(slice_s, left)
            outcome = self.listener.wait(waiter, slice_s)  # may read for other callers too
            if outcome is not None:
                return outcome
            live = self._recheck(job_id, live)

    def _recheck(self, job_id: str, live_before: int) -> int:
        """Deliver the outcome if settled; raise NoSupervisor when none served the queue
        for two checks in a row; return the live count (-1: unknown, Redis unreachable)."""
        try:
            got = self.store.attach(job_id, self.listener.cid)
            if isinstance(got, Outcome):
                self.listener.deliver(got)
                return live_before
            watch = self.store.watch(job_id)
        except redis.RedisError as exc:
            log.warning("waiting for job %s: cannot reach Redis (%s); still waiting",
                        job_id, reason(exc))
            return -1
        return self._judge(watch, live_before)

    def _judge(self, watch: JobWatch, live_before: int) -> int:
        """The rule of both waits: a job queued or active while no live supervisor served
        its queue at two checks in a row raises NoSupervisor; else the live count."""
        live = watch.live_count(self.config.lease_ms)
        if live == 0 and live_before == 0 and watch.status in ("queued", "active"):
            raise no_supervisor(watch, self.config.lease_ms)
        return live

    def _check_nested(self, queue: str, retry: RedisRetry) -> None:
        ctx = current_job.get()
        slots = getattr(ctx, "slots", None)
        if ctx is None or slots is None or slots.queue != queue:
            return
        would_block_all = slots.waiting_nested() + 1 >= slots.capacity
        if would_block_all and retrying(lambda: self.store.live_supervisors(queue),
                                        retry) <= 1:
            raise DeadlockError(
                f"run_job from inside job {ctx.job.name!r} would wait for a free slot of "
                f"queue {queue!r}, but every one of its {slots.capacity} slot(s) is held by a "
                "job waiting the same way and no other supervisor serves the queue; raise "
                "concurrency, use enqueue() without waiting, or put the inner job on the "
                "other queue"
            )

    # -- asyncio ---------------------------------------------------------------------
    def _async_listener(self) -> AsyncListener:
        # asyncio connections belong to one event loop: one store and one listener per
        # loop (an app has one long-lived loop; call aclose() before a short-lived loop
        # ends). The listener resolves its callers' futures on the loop itself.
        loop = asyncio.get_running_loop()
        listener = self._async_listeners.get(id(loop))
        if listener is None or listener.loop is not loop:
            listener = AsyncListener(AsyncStore(self.config, self.url))
            self._async_listeners[id(loop)] = listener
        return listener

    async def arun_job(self, name: str, data: Any = None, timeout: int | None = None,
                       wait_timeout: int | None = None, retries: int | None = None) -> Any:
        job = self.prepare(name, data, timeout, retries)
        listener = self._async_listener()
        store = listener.store
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        listener.register(job.job_id, future)
        retry = self._retry(f"enqueue job {job.name!r}", wait_timeout)
        job_id = job.job_id
        try:
            await aretrying(listener.ensure_started, retry)  # subscribed before the job exists
            result = await aretrying(lambda: store.enqueue(job, listener.cid), retry)
            if result.attached:
                listener.unregister(job.job_id, future)
                job_id = result.job_id
                listener.register(job_id, future)
                got = await aretrying(lambda: store.attach(job_id, listener.cid), retry)
                if isinstance(got, Outcome):
                    listener.deliver(got)
            outcome = await self._await(listener, job_id, future, wait_timeout,
                                        result.live_supervisors)
        finally:
            listener.unregister(job_id, future)  # a no-op once delivered
        return outcome.named(job.name).value()

    async def aget_result(self, job_id: str, wait_timeout: int | None = None) -> Any:
        _check_job_id(job_id)
        listener = self._async_listener()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        listener.register(job_id, future)
        retry = self._retry(f"fetch the result of job {job_id}", wait_timeout)
        try:
            await aretrying(listener.ensure_started, retry)
            got = await aretrying(lambda: listener.store.attach(job_id, listener.cid), retry)
            if isinstance(got, Outcome):
                return got.value()
            if got == "":
                raise self._not_found(job_id)
            return (await self._await(listener, job_id, future, wait_timeout, 1)).value()
        finally:
            listener.unregister(job_id, future)

    async def _await(self, listener: AsyncListener, job_id: str,
                     future: asyncio.Future[Outcome], wait_timeout: int | None,
                     live: int) -> Outcome:
        if future.done():
            return future.result()
        started = time.monotonic()
        check_s = self.config.lease_ms / 1000
        store = listener.store
        while True:
            slice_s = check_s
            if wait_timeout is not None:
                left = wait_timeout / 1000 - (time.monotonic() - started)
                if left <= 0:
                    raise WaitTimeout(job_id, wait_timeout)
                slice_s = min(slice_s, left)
            done, _ = await asyncio.wait({future}, timeout=slice_s)
            if done:
                return future.result()
            try:
                got = await store.attach(job_id, listener.cid)
                if isinstance(got, Outcome):
                    return got
                watch = await store.watch(job_id)
            except redis.RedisError as exc:
                log.warning("waiting for job %s: cannot reach Redis (%s); still waiting",
                            job_id, reason(exc))
                live = -1
                continue
            live = self._judge(watch, live)


class _nested_wait:
    """Counts a job's slot as waiting on a nested run_job while the call waits."""

    def __init__(self, queue: str) -> None:
        ctx = current_job.get()
        slots = getattr(ctx, "slots", None)
        self.slots = slots if slots is not None and slots.queue == queue else None

    def __enter__(self) -> None:
        if self.slots is not None:
            self.slots.enter_nested()

    def __exit__(self, *exc: object) -> None:
        if self.slots is not None:
            self.slots.leave_nested()


def _check_job_id(job_id: str) -> None:
    try:
        queue_of_job(job_id)
    except ValueError as exc:
        raise JobNotFound(str(exc)) from exc


class JobHandle:
    """A job enqueued without waiting: ``.result()``, or ``await handle``."""

    def __init__(self, job_id: str, client: Client) -> None:
        self.id = job_id
        self._client = client

    def result(self, wait_timeout: int | None = None) -> Any:
        return self._client.get_result(self.id, wait_timeout)

    def __await__(self) -> Any:
        return self._client.aget_result(self.id).__await__()

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"


# -- the process's default client ------------------------------------------------------
_default: tuple[int, Client] | None = None
_default_lock = threading.Lock()


def resolve_redis_url(config: Config) -> str:
    if config.redis_url:
        return config.redis_url
    if not config.project_found:  # an embedded server belongs to a project, not to any cwd
        raise ConfigError(f"no Redis URL is configured (REDIS_URL) and {project_hint(config)}")
    from .embedded import ensure_embedded

    return ensure_embedded(config.project_dir)


def default_client() -> Client:
    """The client of this process, built from the project's config on first use."""
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
            wait_timeout: int | None = None, retries: int | None = None) -> Any:
    """Run job NAME with DATA, wait, and return its result (or raise its error)."""
    return default_client().run_job(name, data, timeout, wait_timeout, retries)


async def arun_job(name: str, data: Any = None, timeout: int | None = None,
                   wait_timeout: int | None = None, retries: int | None = None) -> Any:
    """The asyncio twin of run_job."""
    return await default_client().arun_job(name, data, timeout, wait_timeout, retries)


def enqueue(name: str, data: Any = None, timeout: int | None = None,
            retries: int | None = None) -> JobHandle:
    """Enqueue job NAME without waiting; the handle fetches the result later."""
    return default_client().enqueue(name, data, timeout, retries)


def get_result(job_id: str, wait_timeout: int | None = None) -> Any:
    """Wait for the job with this id (from any process) and return or raise its outcome."""
    return default_client().get_result(job_id, wait_timeout)
