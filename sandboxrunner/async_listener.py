"""The asyncio twin of `listener.Listener`: the reply channels of one event loop's callers
(module docstring of listener.py: client ids, sharded per-queue channels, confirmed
subscriptions, re-reads after a gap, the orphan cache)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import redis

from .async_store import AsyncStore
from .connection import reason
from .job import Outcome
from .listener import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    LISTEN_SLICE_S,
    READ_ERRORS,
    Awaited,
    outcome_of,
)

log = logging.getLogger(__name__)


class AsyncListener:
    """The asyncio twin of `Listener`, one per event loop: a task on the loop reads each
    queue's reply channel and resolves the callers' futures directly, so a result never
    crosses a thread (no second thread contending for the GIL, no call_soon_threadsafe
    wake-up).

    It has its own client id, so replies go straight to the loop that waits for them. It
    subscribes to a queue's channel on first use (`ensure_started`, which callers retry
    like an enqueue while Redis is unreachable); after a lost connection it resubscribes
    and re-reads every awaited job, as `Listener` does.
    """

    def __init__(self, store: AsyncStore) -> None:
        self.loop = asyncio.get_running_loop()
        self.store = store
        self.cid = uuid.uuid4().hex
        self._awaited: Awaited[asyncio.Future[Outcome]] = Awaited()
        self._channels: dict[str, _AsyncReplyChannel] = {}
        self._start_lock = asyncio.Lock()

    async def ensure_started(self, queue: str) -> None:
        """Subscribe to QUEUE's channel (confirmed) and start reading it, once; raises
        while Redis is down."""
        channel = self._channels.get(queue)
        if channel is not None and channel.running():
            return
        async with self._start_lock:
            channel = self._channels.setdefault(queue, _AsyncReplyChannel(self, queue))
            await channel.start()

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
        for channel in list(self._channels.values()):
            await channel.close()

    async def recheck(self) -> None:
        """Ask Redis for the outcome of every awaited job (after a gap in the stream)."""
        for job_id in self._awaited.job_ids():
            try:
                got = await self.store.attach(job_id, self.cid)
            except redis.RedisError:
                return
            if isinstance(got, Outcome):
                self.deliver(got)


class _AsyncReplyChannel:
    """One queue's reply channel of an `AsyncListener`, read by a task of its own."""

    def __init__(self, listener: AsyncListener, queue: str) -> None:
        self.listener, self.queue = listener, queue
        self.name = listener.store.keys.reply_channel(queue, listener.cid)
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        # behind Sentinels the reader looks up from the channel once a slice, to find out a
        # demoted master; else no time limit (redis-py then sets up no timer per message):
        # the task is cancelled by close(), and a lost connection raises
        self._slice_s = LISTEN_SLICE_S if listener.store.behind_sentinels else None

    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running():
            return
        await self._drop_pubsub()
        self._pubsub = await self.listener.store.subscribe_replies(self.queue,
                                                                   self.listener.cid)
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"sr-async-listener-{self.queue}")

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
                await pubsub.aclose()
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
                try:
                    message = await self._pubsub.get_message(timeout=self._slice_s)
                    if message is not None and message.get("type") == "sunsubscribe":
                        raise redis.ConnectionError(f"{self.name} moved to another node")
                    if message is None and not await self.listener.store.subscription_current(
                            self._pubsub):
                        raise redis.ConnectionError("the Sentinels named another master")
                except READ_ERRORS as exc:
                    log.warning("result listener lost Redis (%s); reconnecting", reason(exc))
                    await self._drop_pubsub()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                backoff = BACKOFF_MIN_S
                if message is not None and message.get("type") == "smessage":
                    outcome = outcome_of(self.name, message["data"])
                    if outcome is not None:
                        self.listener.deliver(outcome)
        finally:
            await self._drop_pubsub()

    async def _resubscribe(self) -> bool:
        try:
            self._pubsub = await self.listener.store.subscribe_replies(self.queue,
                                                                       self.listener.cid)
        except (redis.RedisError, OSError) as exc:
            log.warning("result listener could not resubscribe yet: %s", reason(exc))
            return False
        await self.listener.recheck()
        return True
