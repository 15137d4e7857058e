"""The asyncio twin of `listener.Listener`: the reply channel of one event loop's callers
(module docstring of listener.py: client ids, confirmed subscriptions, re-reads after a
gap, the orphan cache)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import redis
import redis.asyncio as aioredis

from .async_store import AsyncStore
from .connection import reason
from .job import Outcome
from .listener import BACKOFF_MAX_S, BACKOFF_MIN_S, SUBSCRIBE_TIMEOUT_S, Awaited, outcome_of

log = logging.getLogger(__name__)


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
        self._awaited: Awaited[asyncio.Future[Outcome]] = Awaited()
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
        orphan = self._awaited.add(job_id, future)
        if orphan is not None and not future.done():
            future.set_result(orphan)

    def unregister(self, job_id: str, future: asyncio.Future[Outcome]) -> None:
        self._awaited.remove(job_id, future)

    def deliver(self, outcome: Outcome) -> None:
        for future in self._awaited.take(outcome):
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
        backoff = BACKOFF_MIN_S
        try:
            while True:
                if self._pubsub is None and not await self._resubscribe():
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                assert self._pubsub is not None
                try:
                    # no time limit (redis-py then sets up no timer per message): the task
                    # is cancelled by close(), and a lost connection raises
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                             timeout=None)
                except (redis.RedisError, OSError, ValueError, RuntimeError) as exc:
                    log.warning("result listener lost Redis (%s); reconnecting", reason(exc))
                    await self._drop_pubsub()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                backoff = BACKOFF_MIN_S
                if message is not None and message.get("type") == "message":
                    self._handle(message["data"])
        finally:
            await self._drop_pubsub()

    def _handle(self, data: bytes | str) -> None:
        outcome = outcome_of(self.channel, data)
        if outcome is not None:
            self.deliver(outcome)

    async def _resubscribe(self) -> bool:
        try:
            self._pubsub = await self._subscribe()
        except (redis.RedisError, OSError) as exc:
            log.warning("result listener could not resubscribe yet: %s", reason(exc))
            return False
        await self.recheck()
        return True

    async def recheck(self) -> None:
        """Ask Redis for the outcome of every awaited job (after a gap in the stream)."""
        for job_id in self._awaited.job_ids():
            try:
                got = await self.store.attach(job_id, self.cid)
            except redis.RedisError:
                return
            if isinstance(got, Outcome):
                self.deliver(got)
