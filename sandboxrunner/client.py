"""Calling jobs: run_job, arun_job, enqueue, get_result.

A call is prepared before anything reaches Redis (calls.py: a known name, JSON data under
the size limit, a positive timeout, a JSON singleton key), then enqueued with one script
call naming the listener's client id as the one to notify, and waited for on that
listener: the process's shared `Listener` for threads, the event loop's own
`AsyncListener` for asyncio callers.

The sync and asyncio twins share every rule, each kept in one place: preparing a call
(calls.py), refusing a nested call that would wait for its own slot (nested.py), slicing
a wait and raising WaitTimeout or NoSupervisor (waiting.py, supervision.py), and retrying
while Redis does not answer. A waiting caller keeps waiting while Redis is unreachable
(its listener reconnects and re-reads what it missed); before it waits, every call (the
subscribe, the enqueue, the first read) retries under `connection.RedisRetry` for up to
ENQUEUE_RETRY_S (bounded by ``wait_timeout``), then raises `RedisUnavailable`. The job id
is chosen before the first try, so a retry whose first try got through attaches to that
job instead of enqueueing it twice.

The module-level functions (run_job, enqueue, ...) and the client they use are in
process_client.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis

from .async_listener import AsyncListener
from .async_store import AsyncStore
from .bulk import BatchResult, PreparedBatch
from .calls import Schedule, prepare_batch, prepare_call
from .client_control import JobControlCalls
from .config import Config, redact_url
from .connection import RedisRetry, aretrying, caller_retry, retrying
from .errors import JobNotFound, WaitTimeout
from .job import EnqueueResult, Outcome, PreparedJob
from .job_control import (
    PROGRESS_WATCHERS,
    CancelResult,
    ProgressCallback,
)
from .keys import queue_of_job
from .listener import Listener, Waiter
from .nested import NestedCall
from .redis_errors import api_boundary
from .registry import Registry
from .store import Store
from .waiting import Wait

log = logging.getLogger(__name__)

ENQUEUE_RETRY_S = 10.0  # how long a call waits for an unreachable (or loading) Redis


class Client(JobControlCalls):
    """Enqueues and waits, and controls jobs (client_control.py); one per process is
    created on demand by the module functions."""

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
                retries: int | None = None, schedule: Schedule | None = None) -> PreparedJob:
        return prepare_call(self.registry.get(name), data, timeout, retries, self.config,
                            schedule=schedule)

    def _retry(self, doing: str, wait_timeout: int | None) -> RedisRetry:
        """The rule for this call while Redis does not answer: retry up to
        ENQUEUE_RETRY_S (bounded by wait_timeout), then RedisUnavailable."""
        limit_s = ENQUEUE_RETRY_S
        if wait_timeout is not None:
            limit_s = min(limit_s, wait_timeout / 1000)
        return RedisRetry(self.url, doing, limit_s)

    def _note_enqueued(self, job: PreparedJob, result: EnqueueResult) -> None:
        if result.live_supervisors == 0:
            log.warning("no supervisor serves queue %r yet; job %s waits up to %d ms for one "
                        "(`sandboxrunner start`)", job.queue, result.job_id,
                        self.config.lease_ms)

    # -- sync ------------------------------------------------------------------------
    @api_boundary("run job {!r}")
    def run_job(self, name: str, data: Any = None, timeout: int | None = None,
                wait_timeout: int | None = None, retries: int | None = None, *,
                on_progress: ProgressCallback | None = None, delay: int | None = None,
                run_at: dt.datetime | None = None, job_id: str | None = None) -> Any:
        job = self.prepare(name, data, timeout, retries, Schedule(delay, run_at, job_id))
        retry = self._retry(f"enqueue job {job.name!r}", wait_timeout)
        with NestedCall(job.queue) as nested:
            if nested.would_wait_for_itself():
                nested.refuse_if_alone(
                    retrying(lambda: self.store.live_supervisors(job.queue), retry))
            with PROGRESS_WATCHERS.watching(job.job_id, on_progress) as hear:
                return self._enqueue_and_wait(job, retry, wait_timeout, hear).value()

    def _enqueue_and_wait(self, job: PreparedJob, retry: RedisRetry,
                          wait_timeout: int | None,
                          hear: Callable[[str], None]) -> Outcome:
        """HEAR(id): the caller's progress callback also hears the job an attach found."""
        listener = self.listener
        retrying(lambda: listener.subscribe(job.queue), retry)  # before the job exists
        waiter = Waiter()
        listener.register(job.job_id, waiter)
        try:
            result = retrying(lambda: self.store.enqueue(job, listener.cid), retry)
        except BaseException:
            listener.unregister(job.job_id, waiter)
            raise
        if result.attached:
            listener.unregister(job.job_id, waiter)
            listener.register(result.job_id, waiter)
            hear(result.job_id)
            self._collect_if_settled(result.job_id, retry)
        self._note_enqueued(job, result)
        outcome = self._wait(result.job_id, waiter, wait_timeout, result.live_supervisors)
        return outcome.named(job.name)

    @api_boundary("enqueue job {!r}")
    def enqueue(self, name: str, data: Any = None, timeout: int | None = None,
                retries: int | None = None, *, delay: int | None = None,
                run_at: dt.datetime | None = None, job_id: str | None = None) -> JobHandle:
        job = self.prepare(name, data, timeout, retries, Schedule(delay, run_at, job_id))
        retry = self._retry(f"enqueue job {job.name!r}", None)
        result = retrying(lambda: self.store.enqueue(job), retry)
        return JobHandle(result.job_id, self)

    @api_boundary("enqueue a batch of job {!r}")
    def enqueue_many(self, name: str, items: Sequence[Any], timeout: int | None = None,
                     retries: int | None = None) -> list[JobHandle]:
        batch = prepare_batch(self.registry.get(name), items, timeout, retries, self.config)
        if not batch.ids:
            return []
        retry = self._retry(f"enqueue a batch of job {name!r}", None)
        return self._note_batch(batch, retrying(lambda: self.store.enqueue_many(batch), retry))

    def _note_batch(self, batch: PreparedBatch, result: BatchResult) -> list[JobHandle]:
        if result.live_supervisors == 0:
            log.warning("no supervisor serves queue %r yet; the %d jobs of this batch wait "
                        "for one (`sandboxrunner start`)", batch.queue, len(batch.ids))
        return [JobHandle(job_id, self) for job_id in result.job_ids]

    @api_boundary("fetch the result of job {}")
    def get_result(self, job_id: str, wait_timeout: int | None = None) -> Any:
        _check_job_id(job_id)
        retry = self._retry(f"fetch the result of job {job_id}", wait_timeout)
        listener = self.listener
        retrying(lambda: listener.subscribe(queue_of_job(job_id)), retry)
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

    def handle(self, job_id: str) -> JobHandle:
        return JobHandle(job_id, self)

    def _not_found(self, job_id: str) -> JobNotFound:
        return JobNotFound(f"no job {job_id}: never enqueued, or its result expired "
                           f"(result_ttl {self.config.result_ttl} ms)")

    def _gone(self, job_id: str) -> JobNotFound:
        """A job waited for whose record vanished: lost in a failover (writes the old
        master acknowledged after its replica was promoted), evicted, or flushed."""
        return JobNotFound(f"job {job_id} is gone from Redis at {redact_url(self.url)} while "
                           "awaited: lost with a failed-over master (see wait_replicas), "
                           "evicted, or deleted")

    def _collect_if_settled(self, job_id: str, retry: RedisRetry) -> None:
        """Deliver the outcome of a job attached to if it settled before our waiter was
        registered: its one reply message may have gone to another waiter of this process."""
        got = retrying(lambda: self.store.attach(job_id, self.listener.cid), retry)
        if isinstance(got, Outcome):
            self.listener.deliver(got)

    def _wait(self, job_id: str, waiter: Waiter, wait_timeout: int | None,
              live: int) -> Outcome:
        wait = Wait(job_id, wait_timeout, self.config.lease_ms, live)
        while True:
            try:
                slice_s = wait.slice_s()
            except WaitTimeout:
                self.listener.unregister(job_id, waiter)
                raise
            outcome = self.listener.wait(waiter, job_id, slice_s)  # reads for others too
            if outcome is not None:
                return outcome
            try:
                got = self.store.attach(job_id, self.listener.cid)
                if isinstance(got, Outcome):
                    self.listener.deliver(got)  # to every waiter of the job, ours included
                    return got
                if got == "":
                    self.listener.unregister(job_id, waiter)
                    raise self._gone(job_id)
                wait.judge(self.store.watch(job_id))
            except redis.RedisError as exc:
                wait.unreachable(exc)

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

    def async_store(self) -> AsyncStore:
        """The running event loop's store (for calls outside this module: queue_control)."""
        return self._async_listener().store

    @api_boundary("run job {!r}")
    async def arun_job(self, name: str, data: Any = None, timeout: int | None = None,
                       wait_timeout: int | None = None, retries: int | None = None, *,
                       on_progress: ProgressCallback | None = None, delay: int | None = None,
                       run_at: dt.datetime | None = None, job_id: str | None = None) -> Any:
        job = self.prepare(name, data, timeout, retries, Schedule(delay, run_at, job_id))
        retry = self._retry(f"enqueue job {job.name!r}", wait_timeout)
        listener = self._async_listener()
        with NestedCall(job.queue, "arun_job") as nested:
            if nested.would_wait_for_itself():
                nested.refuse_if_alone(
                    await aretrying(lambda: listener.store.live_supervisors(job.queue), retry))
            with PROGRESS_WATCHERS.watching(job.job_id, on_progress) as hear:
                return (await self._aenqueue_and_wait(listener, job, retry,
                                                      wait_timeout, hear)).value()

    async def _aenqueue_and_wait(self, listener: AsyncListener, job: PreparedJob,
                                 retry: RedisRetry, wait_timeout: int | None,
                                 hear: Callable[[str], None]) -> Outcome:
        store = listener.store
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        listener.register(job.job_id, future)
        job_id = job.job_id
        try:
            # subscribed before the job exists
            await aretrying(lambda: listener.ensure_started(job.queue), retry)
            result = await aretrying(lambda: store.enqueue(job, listener.cid), retry)
            if result.attached:
                listener.unregister(job.job_id, future)
                job_id = result.job_id
                listener.register(job_id, future)
                hear(job_id)
                got = await aretrying(lambda: store.attach(job_id, listener.cid), retry)
                if isinstance(got, Outcome):
                    listener.deliver(got)
            self._note_enqueued(job, result)
            outcome = await self._await(listener, job_id, future, wait_timeout,
                                        result.live_supervisors)
        finally:
            listener.unregister(job_id, future)  # a no-op once delivered
        return outcome.named(job.name)

    @api_boundary("enqueue job {!r}")
    async def aenqueue(self, name: str, data: Any = None, timeout: int | None = None,
                       retries: int | None = None, *, delay: int | None = None,
                       run_at: dt.datetime | None = None,
                       job_id: str | None = None) -> JobHandle:
        job = self.prepare(name, data, timeout, retries, Schedule(delay, run_at, job_id))
        store = self._async_listener().store
        retry = self._retry(f"enqueue job {job.name!r}", None)
        result = await aretrying(lambda: store.enqueue(job, ""), retry)
        return JobHandle(result.job_id, self)

    @api_boundary("enqueue a batch of job {!r}")
    async def aenqueue_many(self, name: str, items: Sequence[Any], timeout: int | None = None,
                            retries: int | None = None) -> list[JobHandle]:
        batch = prepare_batch(self.registry.get(name), items, timeout, retries, self.config)
        if not batch.ids:
            return []
        store = self._async_listener().store
        retry = self._retry(f"enqueue a batch of job {name!r}", None)
        return self._note_batch(batch, await aretrying(lambda: store.enqueue_many(batch), retry))

    @api_boundary("fetch the result of job {}")
    async def aget_result(self, job_id: str, wait_timeout: int | None = None) -> Any:
        _check_job_id(job_id)
        listener = self._async_listener()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        listener.register(job_id, future)
        retry = self._retry(f"fetch the result of job {job_id}", wait_timeout)
        try:
            await aretrying(lambda: listener.ensure_started(queue_of_job(job_id)), retry)
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
        wait = Wait(job_id, wait_timeout, self.config.lease_ms, live)
        while not future.done():
            done, _ = await asyncio.wait({future}, timeout=wait.slice_s())
            if done:
                break
            try:
                got = await listener.store.attach(job_id, listener.cid)
                if isinstance(got, Outcome):
                    listener.deliver(got)  # to every waiter of the job, ours included
                    return got
                if got == "":
                    raise self._gone(job_id)
                wait.judge(await listener.store.watch(job_id))
            except redis.RedisError as exc:
                wait.unreachable(exc)
        return future.result()


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

    def cancel(self) -> CancelResult:
        return self._client.cancel(self.id)

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"
