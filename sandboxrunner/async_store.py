"""The asyncio calls a waiting caller needs (enqueue, attach, the job's supervision),
on one event loop's connections; the twin of the matching `Store` calls.

Concurrent `arun_job` calls of one loop that enqueue in the same loop iteration go out in
one write on one connection (`_ScriptBatcher`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from .config import Config
from .connection import async_client
from .job import EnqueueResult, Outcome, PreparedJob
from .keys import Keys
from .store import SCRIPT_SOURCES
from .supervision import JobWatch, live_commands, live_from, watch_commands, watch_from


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


async def _send_async(client: aioredis.Redis, *commands: tuple[Any, ...]) -> list[Any]:
    """The asyncio twin of `_send`: one write, the replies in order, errors in place."""
    pool: Any = client.connection_pool  # redis-py's asyncio pool and connection are untyped
    conn: Any = await pool.get_connection()
    try:
        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        await conn.disconnect()  # replies may be left unread on it
        raise
    finally:
        await pool.release(conn)


class _ScriptBatcher:
    """Sends the calls of one script that the callers of an event loop start in the same
    loop iteration in one write on one connection, instead of one each. A connection
    error fails every call of the batch; their callers retry (enqueue is idempotent per
    job id).
    """

    def __init__(self, client: aioredis.Redis, script: Any) -> None:
        self._client, self._script = client, script
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
        try:
            results = await _send_async(self._client, *(("EVALSHA", self._script.sha, *c)
                                                        for c, _ in batch))
        except Exception as exc:  # noqa: BLE001 - every caller gets it (and retries)
            for _, future in batch:
                _resolve(future, exc)
            return
        for (command, future), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):  # a restarted server: load it again
                await self._call_one(command, future)
            else:
                _resolve(future, result)

    async def _call_one(self, command: list[Any], future: asyncio.Future[Any]) -> None:
        nkeys = command[0]
        try:
            result = await self._script(keys=command[1 : 1 + nkeys], args=command[1 + nkeys :])
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            result = exc
        _resolve(future, result)


class AsyncStore:
    """The asyncio calls a waiting caller needs: enqueue, attach, and what Redis shows of
    the supervisors of its job's queue."""

    def __init__(self, config: Config, url: str) -> None:
        self.config = config
        self.keys = Keys(config.key_prefix)
        self.redis = async_client(url)
        self._scripts = {
            n: self.redis.register_script(SCRIPT_SOURCES[n]) for n in ("enqueue", "attach")
        }
        self._enqueues = _ScriptBatcher(self.redis, self._scripts["enqueue"])

    async def close(self) -> None:
        await self.redis.aclose()

    async def enqueue(self, job: PreparedJob, reply_cid: str) -> EnqueueResult:
        """The twin of `Store.enqueue`."""
        k = self.keys
        return EnqueueResult.from_reply(await self._enqueues.call(
            [k.wait(job.queue), k.stats(job.queue), k.sups(job.queue)],
            [k.queue_prefix(job.queue), reply_cid, self.config.lease_ms, *job.script_args()]))

    async def attach(self, job_id: str, cid: str) -> Outcome | str:
        """The twin of `Store.attach`."""
        return Outcome.from_attach(
            job_id, await self._scripts["attach"](keys=[self.keys.job(job_id)], args=[cid]))

    async def watch(self, job_id: str) -> JobWatch:
        """The twin of `Store.watch`: the same commands, the same parsing."""
        return watch_from(job_id,
                          await _send_async(self.redis, *watch_commands(self.keys, job_id)))

    async def live_supervisors(self, queue: str) -> int:
        """The twin of `Store.live_supervisors`."""
        return live_from(await _send_async(self.redis, *live_commands(self.keys, queue)),
                         self.config.lease_ms)
