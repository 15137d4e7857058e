"""The asyncio calls a waiting caller needs (enqueue, attach, the job's supervision, the
reply subscription), on one event loop's connections (async_routing.py routes each to the
server holding its key); the twin of the matching `Store` calls.

Concurrent `arun_job` calls of one loop that enqueue in the same loop iteration go out in
one write per server (`_ScriptBatcher`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .async_routing import AsyncRouter
from .bulk import BatchResult, PreparedBatch
from .config import Config
from .job import EnqueueResult, Outcome, PreparedJob
from .keys import Keys
from .redirects import Replicas
from .store import SCRIPT_SHAS, SOURCES_BY_SHA, batch_keys, enqueue_keys, replicas_of
from .supervision import JobWatch, live_commands, live_from, watch_commands, watch_from


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class _ScriptBatcher:
    """Sends the calls of one script that the callers of an event loop start in the same
    loop iteration in one write per server, instead of one each. A connection error
    fails every call of its write; their callers retry (enqueue is idempotent per job id).
    """

    def __init__(self, router: AsyncRouter, sha: str, replicas: Replicas | None) -> None:
        self._router, self._sha, self._replicas = router, sha, replicas
        self._pending: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()  # strong references

    def call(self, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:  # the task runs next iteration, after this one's callers
            task = loop.create_task(self._flush())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        self._pending.append(([len(keys), *keys, *args], future))
        return future

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        by_route: dict[str, list[tuple[list[Any], asyncio.Future[Any]]]] = {}
        for call in batch:
            by_route.setdefault(call[0][1], []).append(call)  # by its first key
        await asyncio.gather(*(self._send(route, calls) for route, calls in by_route.items()))

    async def _send(self, route: str, calls: list[tuple[list[Any], asyncio.Future[Any]]],
                    ) -> None:
        try:
            results = await self._router.send(
                route, [("EVALSHA", self._sha, *c) for c, _ in calls], self._replicas)
        except Exception as exc:  # noqa: BLE001 - every caller gets it (and retries)
            results = [exc] * len(calls)
        for (_, future), result in zip(calls, results, strict=True):
            _resolve(future, result)


class AsyncStore:
    """The asyncio calls a waiting caller needs: enqueue, attach, and what Redis shows of
    the supervisors of its job's queue."""

    def __init__(self, config: Config, url: str) -> None:
        self.config = config
        self.keys = Keys(config.key_prefix)
        self.router = AsyncRouter(url, scripts=SOURCES_BY_SHA)
        self._enqueues = _ScriptBatcher(self.router, SCRIPT_SHAS["enqueue"],
                                        replicas_of(config))

    @property
    def behind_sentinels(self) -> bool:
        """Whether the master is the one the Sentinels name (it may change under us)."""
        return self.router.kind == "sentinel"

    async def close(self) -> None:
        await self.router.close()

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        (reply,) = await self.router.send(keys[0], [
            ("EVALSHA", SCRIPT_SHAS[name], len(keys), *keys, *args)])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def enqueue(self, job: PreparedJob, reply_cid: str) -> EnqueueResult:
        """The twin of `Store.enqueue`."""
        return EnqueueResult.from_reply(await self._enqueues.call(
            enqueue_keys(self.keys, job),
            [self.keys.queue_prefix(job.queue), reply_cid, self.config.lease_ms,
             *job.script_args(), *job.schedule_args()]))

    async def enqueue_many(self, batch: PreparedBatch) -> BatchResult:
        """The twin of `Store.enqueue_many`."""
        k = self.keys
        (reply,) = await self.router.send(k.wait(batch.queue), [
            ("EVALSHA", SCRIPT_SHAS["enqueue_many"], 3, *batch_keys(k, batch.queue),
             k.queue_prefix(batch.queue), self.config.lease_ms, *batch.script_args())],
            replicas_of(self.config))
        if isinstance(reply, Exception):
            raise reply
        return BatchResult.from_reply(batch, reply)

    async def attach(self, job_id: str, cid: str) -> Outcome | str:
        """The twin of `Store.attach`."""
        return Outcome.from_attach(
            job_id, await self._run("attach", [self.keys.job(job_id)], [cid]))

    async def watch(self, job_id: str) -> JobWatch:
        """The twin of `Store.watch`: the same commands, the same parsing."""
        return watch_from(job_id, await self.router.send(self.keys.job(job_id),
                                                         watch_commands(self.keys, job_id)))

    async def live_supervisors(self, queue: str) -> int:
        """The twin of `Store.live_supervisors`."""
        return live_from(await self.router.send(self.keys.sups(queue),
                                                live_commands(self.keys, queue)),
                         self.config.lease_ms)

    async def set_paused(self, queue: str, paused: bool) -> bool:
        """The twin of `Store.set_paused`."""
        key = self.keys.paused(queue)
        command = ("SET", key, "1", "NX") if paused else ("DEL", key)
        (reply,) = await self.router.send(key, [command])
        if isinstance(reply, Exception):
            raise reply
        return bool(reply)

    async def subscribe_replies(self, queue: str, cid: str) -> Any:
        """The twin of `Store.subscribe_replies`."""
        return await self.router.subscribe(self.keys.reply_channel(queue, cid))

    async def subscription_current(self, pubsub: Any) -> bool:
        """The twin of `Store.subscription_current`."""
        return await self.router.still_current(pubsub)
