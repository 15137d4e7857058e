"""Pub/sub listeners: wake every caller waiting for a result.

`Listener` serves the threads of a client process; `AsyncListener` (one per event loop)
serves asyncio callers on the loop itself.

Each listener has a client id (CID) and subscribes once to ``PREFIX:reply:CID``. A job
records the CIDs of its waiting callers; the finish script publishes the outcome to each.
Many concurrent callers (threads, or the asyncio tasks of one loop) therefore share one
connection and nothing polls.

Pub/sub drops messages while disconnected, so the listener confirms its subscription
before anyone enqueues, and after a reconnect it asks Redis for the outcome of every job
still awaited (``attach``). A message that arrives before its waiter registered (a
singleton caller attached to another caller's job) is kept briefly in a bounded cache.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable

import redis
import redis.asyncio as aioredis

from .job import Outcome
from .store import AsyncStore, Store

log = logging.getLogger(__name__)

Callback = Callable[[Outcome], None]
ORPHAN_CACHE_SIZE = 10_000
SUBSCRIBE_TIMEOUT_S = 5.0
LISTEN_SLICE_S = 1.0  # below redis-py's 5 s socket timeout: an idle read never times out


class Listener:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.cid = uuid.uuid4().hex
        self.channel = store.keys.reply_channel(self.cid)
        self._lock = threading.Lock()
        self._waiters: dict[str, list[Callback]] = {}
        self._orphans: OrderedDict[str, Outcome] = OrderedDict()
        self._stop = threading.Event()
        self._pubsub = self._subscribe()
        self._thread = threading.Thread(target=self._loop, name="sr-listener", daemon=True)
        self._thread.start()

    def _subscribe(self) -> redis.client.PubSub:
        pubsub: redis.client.PubSub = self.store.redis.pubsub()  # type: ignore[no-untyped-call]
        pubsub.subscribe(self.channel)
        # wait for the confirmation: a result published before it would be lost
        message = pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
        while message is not None and message.get("type") != "subscribe":
            message = pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
        if message is None:
            pubsub.close()
            raise redis.ConnectionError(f"no confirmation of SUBSCRIBE {self.channel}")
        return pubsub

    def register(self, job_id: str, callback: Callback) -> None:
        with self._lock:
            orphan = self._orphans.pop(job_id, None)
            if orphan is None:
                self._waiters.setdefault(job_id, []).append(callback)
                return
        callback(orphan)

    def unregister(self, job_id: str, callback: Callback) -> None:
        with self._lock:
            callbacks = self._waiters.get(job_id)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._waiters[job_id]

    def deliver(self, outcome: Outcome) -> None:
        with self._lock:
            callbacks = self._waiters.pop(outcome.job_id, None)
            if callbacks is None:
                self._orphans[outcome.job_id] = outcome
                while len(self._orphans) > ORPHAN_CACHE_SIZE:
                    self._orphans.popitem(last=False)
                return
        for callback in callbacks:
            callback(outcome)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        try:
            self._pubsub.close()
        except redis.RedisError:
            pass

    def _loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                backoff = 0.05
            except (redis.RedisError, OSError, ValueError, RuntimeError) as exc:
                if self._stop.is_set():
                    return
                log.warning("result listener lost Redis (%s); reconnecting", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                self._reconnect()
                continue
            if message is not None and message.get("type") == "message":
                try:
                    outcome = Outcome.from_reply(message["data"])
                except ValueError:
                    # published by hand, not by the finish script: this thread serves
                    # every waiter of the process and must not die of it
                    log.error("ignored a malformed message on %s: %r", self.channel,
                              message["data"][:200])
                    continue
                self.deliver(outcome)

    def _reconnect(self) -> None:
        try:
            self._pubsub.close()
        except (redis.RedisError, OSError):
            pass
        try:
            self._pubsub = self._subscribe()
        except (redis.RedisError, OSError) as exc:
            log.warning("result listener could not resubscribe yet: %s", exc)
            return
        self.recheck()

    def recheck(self) -> None:
        """Ask Redis for the outcome of every awaited job (after a gap in the stream)."""
        with self._lock:
            pending = list(self._waiters)
        for job_id in pending:
            try:
                got = self.store.attach(job_id, self.cid)
            except redis.RedisError:
                return
            if isinstance(got, Outcome):
                self.deliver(got)


class AsyncListener:
    """The asyncio twin of `Listener`, one per event loop: a task on the loop reads the
    reply channel and resolves the callers' futures directly, so a result never crosses a
    thread (no second thread contending for the GIL, no call_soon_threadsafe wake-up).

    It has its own client id, so replies go straight to the loop that waits for them. It
    subscribes on first use (`ensure_started`, which callers retry like an enqueue while
    Redis is unreachable); after a lost connection it resubscribes and re-reads every
    awaited job, as `Listener` does.
    """

    def __init__(self, store: AsyncStore) -> None:
        self.loop = asyncio.get_running_loop()
        self.store = store
        self.cid = uuid.uuid4().hex
        self.channel = store.keys.reply_channel(self.cid)
        self._waiters: dict[str, list[asyncio.Future[Outcome]]] = {}
        self._orphans: OrderedDict[str, Outcome] = OrderedDict()
        self._pubsub: aioredis.client.PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        """Subscribe (confirmed) and start reading, once; raises while Redis is down."""
        if self._task is not None and not self._task.done():
            return
        async with self._start_lock:
            if self._task is None or self._task.done():
                await self._drop_pubsub()
                self._pubsub = await self._subscribe()
                self._task = asyncio.get_running_loop().create_task(
                    self._loop(), name="sr-async-listener")

    async def _subscribe(self) -> aioredis.client.PubSub:
        pubsub = self.store.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            # wait for the confirmation: a result published before it would be lost
            message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
            while message is not None and message.get("type") != "subscribe":
                message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        if message is None:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise redis.ConnectionError(f"no confirmation of SUBSCRIBE {self.channel}")
        return pubsub

    def register(self, job_id: str, future: asyncio.Future[Outcome]) -> None:
        orphan = self._orphans.pop(job_id, None)
        if orphan is None:
            self._waiters.setdefault(job_id, []).append(future)
        elif not future.done():
            future.set_result(orphan)

    def unregister(self, job_id: str, future: asyncio.Future[Outcome]) -> None:
        futures = self._waiters.get(job_id)
        if futures and future in futures:
            futures.remove(future)
            if not futures:
                del self._waiters[job_id]

    def deliver(self, outcome: Outcome) -> None:
        futures = self._waiters.pop(outcome.job_id, None)
        if futures is None:
            self._orphans[outcome.job_id] = outcome
            while len(self._orphans) > ORPHAN_CACHE_SIZE:
                self._orphans.popitem(last=False)
            return
        for future in futures:
            if not future.done():
                future.set_result(outcome)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._drop_pubsub()

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (redis.RedisError, OSError):
                pass

    async def _loop(self) -> None:
        backoff = 0.05
        try:
            while True:
                if self._pubsub is None and not await self._resubscribe():
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                assert self._pubsub is not None
                try:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                             timeout=LISTEN_SLICE_S)
                except (redis.RedisError, OSError, ValueError, RuntimeError) as exc:
                    log.warning("result listener lost Redis (%s); reconnecting", exc)
                    await self._drop_pubsub()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.05
                if message is not None and message.get("type") == "message":
                    self._handle(message["data"])
        finally:
            await self._drop_pubsub()

    def _handle(self, data: bytes | str) -> None:
        try:
            outcome = Outcome.from_reply(data)
        except ValueError:
            # published by hand, not by the finish script: the task serves every waiter
            # of the loop and must not die of it
            log.error("ignored a malformed message on %s: %r", self.channel, data[:200])
            return
        self.deliver(outcome)

    async def _resubscribe(self) -> bool:
        try:
            self._pubsub = await self._subscribe()
        except (redis.RedisError, OSError) as exc:
            log.warning("result listener could not resubscribe yet: %s", exc)
            return False
        await self.recheck()
        return True

    async def recheck(self) -> None:
        """Ask Redis for the outcome of every awaited job (after a gap in the stream)."""
        for job_id in list(self._waiters):
            try:
                got = await self.store.attach(job_id, self.cid)
            except redis.RedisError:
                return
            if isinstance(got, Outcome):
                self.deliver(got)
