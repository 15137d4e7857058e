"""The asyncio twin of `routing.Router`, for one event loop's callers (async_store.py):
the same routes by key, the same rules for replies that say a command did not run
(routing.not_run, routing.resend). Each loop's connections are bounded: at most
ASYNC_POOL_SIZE per server, and a caller beyond that waits for a free one (thousands of
concurrent arun_job calls share them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisClusterException

from .config import redact_url
from .connection import (
    ASYNC_POOL_SIZE,
    async_client,
    async_cluster_client,
    async_node_client,
    async_sentinel_master,
    reason,
)
from .deployment import parse_deployment
from .idle_connections import pack
from .nodes import MASTER_CHECK_S
from .redirects import (
    REFRESH_EVERY_S,
    Command,
    Replicas,
    Rerouting,
    again,
    from_a_cluster,
    not_run,
    refreshes_map,
    replicated,
)
from .routing import SUBSCRIBE_TIMEOUT_S


async def exchange_async(conn: Any, commands: Sequence[Command]) -> list[Any]:
    """The asyncio twin of blocking.exchange: one write, the replies in order, errors in
    place; a connection that fails is dropped and the error raised."""
    try:
        await conn.send_packed_command(pack(conn, commands), check_health=False)
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


class _OnePool:
    """One server, or the master behind Sentinels: every key goes to one bounded pool."""

    def __init__(self, client: aioredis.Redis, bounded_by_pool: bool) -> None:
        self.client = client
        # a plain pool waits for a free connection itself; the Sentinels' pool does not
        self._slots = None if bounded_by_pool else asyncio.Semaphore(ASYNC_POOL_SIZE)

    async def acquire(self, key: str) -> tuple[Any, Callable[[], Awaitable[None]]]:
        if self._slots is not None:
            await self._slots.acquire()
        pool: Any = self.client.connection_pool
        try:
            conn = await pool.get_connection()
            if not await self.serves(conn):  # a former master (nodes.SentinelNodes)
                await conn.disconnect()
                await conn.connect()  # asks the Sentinels
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise

        async def release() -> None:
            await pool.release(conn)
            if self._slots is not None:
                self._slots.release()

        return conn, release

    async def serves(self, conn: Any) -> bool:
        """The twin of nodes.OneServer.serves."""
        return True

    async def after_redirect(self, reply: Exception) -> None:
        """Nothing to learn on one server, but a cluster's redirect is raised (see
        nodes.OneServer)."""
        if from_a_cluster(reply):
            raise reply

    async def after_lost_connection(self) -> None:
        """The next connection connects afresh."""

    async def client_for(self, key: str) -> aioredis.Redis:
        return self.client

    async def close(self) -> None:
        await self.client.aclose()


class _SentinelPool(_OnePool):
    """The master the Sentinels name, asked again at most every MASTER_CHECK_S (the twin
    of nodes.SentinelNodes)."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client, bounded_by_pool=False)
        self._master: tuple[str, int] | None = None
        self._checked_at = 0.0

    async def serves(self, conn: Any) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= MASTER_CHECK_S:
            self._checked_at = now
            try:
                pool: Any = self.client.connection_pool
                self._master = tuple(await pool.get_master_address())
            except redis.RedisError:
                pass  # no Sentinel answered: keep the last answer
        connected = getattr(conn, "is_connected", False)
        return self._master is None or not connected or (
            (conn.host, int(conn.port)) == self._master)

    async def close(self) -> None:
        await super().close()
        pool: Any = self.client.connection_pool
        await pool.sentinel_manager.aclose()  # the Sentinels' own connections


class _ClusterPool:
    """A Redis Cluster: a key goes to its slot's master, on that node's connections."""

    def __init__(self, url: str) -> None:
        self._deployment = parse_deployment(url)
        self.cluster = async_cluster_client(self._deployment)
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._subscribers: dict[str, aioredis.Redis] = {}
        self._refreshed_at = 0.0

    async def _node(self, key: str) -> Any:
        try:
            await self.cluster.initialize()  # reads the slot map, once
            return self.cluster.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        except RedisClusterException as exc:
            await self.refresh()
            raise redis.ConnectionError(reason(exc)) from exc

    async def acquire(self, key: str) -> tuple[Any, Callable[[], Awaitable[None]]]:
        node = await self._node(key)
        slots = self._slots.setdefault(node.name, asyncio.Semaphore(ASYNC_POOL_SIZE))
        await slots.acquire()
        conn = node.acquire_connection()

        async def release() -> None:
            node.release(conn)
            slots.release()

        return conn, release

    async def after_redirect(self, reply: Exception) -> None:
        if type(reply) is MovedError:
            await self.cluster.nodes_manager.move_slot(reply)
        elif refreshes_map(reply):
            await self.refresh()

    async def after_lost_connection(self) -> None:
        await self.refresh()

    async def refresh(self) -> None:
        now = time.monotonic()
        if now - self._refreshed_at < REFRESH_EVERY_S:
            return
        self._refreshed_at = now
        try:
            await self.cluster.nodes_manager.initialize()
        except (RedisClusterException, redis.RedisError):
            pass  # keep the old map; the next send tries again

    async def serves(self, conn: Any) -> bool:
        return True  # a moved slot unsubscribes its listeners itself (sunsubscribe)

    async def client_for(self, key: str) -> aioredis.Redis:
        node = await self._node(key)
        client = self._subscribers.get(node.name)
        if client is None:
            client = async_node_client(self._deployment, node.host, int(node.port))
            self._subscribers[node.name] = client
        return client

    async def close(self) -> None:
        for client in self._subscribers.values():
            await client.aclose()
        await self.cluster.aclose()


class AsyncRouter:
    """The connections of one deployment for one event loop's callers."""

    def __init__(self, url: str, *, scripts: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.scripts = dict(scripts or {})
        deployment = parse_deployment(url)
        self.kind = deployment.kind
        self._pools: Any
        if deployment.kind == "cluster":
            self._pools = _ClusterPool(url)
        elif deployment.kind == "sentinel":
            self._pools = _SentinelPool(async_sentinel_master(deployment))
        else:
            self._pools = _OnePool(async_client(url), bounded_by_pool=True)

    async def send(self, key: str, commands: Sequence[Command],
                   replicas: Replicas | None = None) -> list[Any]:
        """The twin of `Router.send` (without blocking reads)."""
        replies = await self._exchange(key, commands, replicas)
        if not any(isinstance(r, redis.ResponseError) and not_run(r) for r in replies):
            return replies
        rerouting = Rerouting(redact_url(self.url))
        while True:
            pending = [i for i, reply in enumerate(replies) if not_run(reply)]
            if not pending:
                return replies
            first = replies[pending[0]]
            await self._pools.after_redirect(first)
            await asyncio.sleep(rerouting.pause_s(first))
            got = await self._exchange(key, [again(commands[i], replies[i], self.scripts)
                                             for i in pending], replicas)
            for i, reply in zip(pending, got, strict=True):
                replies[i] = reply

    async def _exchange(self, key: str, commands: Sequence[Command],
                        replicas: Replicas | None = None) -> list[Any]:
        conn, release = await self._pools.acquire(key)
        try:
            if replicas is not None:
                return replicated(await exchange_async(conn, [*commands, ("WAIT", *replicas)]),
                                  replicas, redact_url(self.url))
            return await exchange_async(conn, commands)
        except (redis.ConnectionError, redis.TimeoutError):
            await self._pools.after_lost_connection()
            raise
        finally:
            await release()

    async def subscribe(self, channel: str) -> Any:
        """The twin of `Router.subscribe`: a PubSub SSUBSCRIBEd to CHANNEL, confirmed."""
        rerouting = Rerouting(redact_url(self.url))
        while True:
            pubsub = (await self._pools.client_for(channel)).pubsub()
            try:
                await pubsub.ssubscribe(channel)
                message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
                while message is not None and message.get("type") != "ssubscribe":
                    message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
            except redis.ResponseError as exc:
                await pubsub.aclose()
                if not not_run(exc):
                    raise
                await self._pools.after_redirect(exc)
                await asyncio.sleep(rerouting.pause_s(exc))
                continue
            except BaseException:
                await pubsub.aclose()
                raise
            if message is None:
                await pubsub.aclose()
                raise redis.ConnectionError(f"no confirmation of SSUBSCRIBE {channel}")
            return pubsub

    async def still_current(self, pubsub: Any) -> bool:
        """The twin of `Router.still_current`."""
        return pubsub.connection is None or bool(await self._pools.serves(pubsub.connection))

    async def close(self) -> None:
        await self._pools.close()
