"""The servers of each kind of deployment (deployment.py), as routing.Router sees them:
which connection pool a key's commands use, what a redirect or a lost connection teaches,
which client reaches a given server (CLIENT UNBLOCK), and the masters (the dashboard).

  OneServer      one server: every key goes to its pool
  SentinelNodes  the master the Sentinels name. A new connection asks them where it is;
                 and at most once every MASTER_CHECK_S a send asks them again, so a
                 connection still open to a server that is no longer the master connects
                 to the new one before it is used (a demoted master keeps taking writes,
                 which the next resync throws away, until the Sentinels reconfigure it:
                 about 10 s after the new master was named, measured with Redis 7.0). It is
                 reconnected at once, not just dropped: redis-py 8 reconnects a dropped
                 connection to the address it had when a command is sent on it, and only
                 its connect() asks the Sentinels. A connection whose server answers
                 READONLY drops itself (redis-py's SentinelManagedConnection).
  ClusterNodes   the master serving the key's slot, from redis-py's slot map (RedisCluster's
                 NodesManager, updated by MOVED, read again after CLUSTERDOWN, UNBLOCKED or
                 a lost connection), on that node's own pool
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisClusterException

from .blocking import Address, address_of
from .connection import reason
from .redirects import REFRESH_EVERY_S, from_a_cluster, refreshes_map

log = logging.getLogger(__name__)

BLOCKING_SOCKET_SLACK_S = 5.0  # a blocking read's socket waits this much past its block
MASTER_CHECK_S = 1.0  # behind Sentinels, who the master is is asked this often at most


class Nodes(Protocol):
    """What routing.Router asks of the servers of a deployment (module docstring)."""

    @property
    def client(self) -> Any: ...

    def pool(self, key: str, blocking: bool) -> Any: ...

    def fresh(self, conn: Any) -> None: ...

    def serves(self, conn: Any) -> bool: ...

    def after_redirect(self, reply: Exception) -> None: ...

    def after_lost_connection(self) -> None: ...

    def client_at(self, address: Address) -> redis.Redis | None: ...

    def client_for(self, key: str) -> redis.Redis: ...

    def address_of(self, key: str) -> Address: ...

    def masters(self) -> list[tuple[Address, redis.Redis]]: ...

    def close(self) -> None: ...


class OneServer:
    """One server: every key goes to one pool (a second one for blocking reads)."""

    def __init__(self, client: redis.Redis, blocking: redis.Redis) -> None:
        self.client: Any = client
        self._blocking = blocking

    def pool(self, key: str, blocking: bool) -> Any:
        return (self._blocking if blocking else self.client).connection_pool

    def fresh(self, conn: Any) -> None:
        """Make sure CONN, about to be used, is not connected to a former master."""

    def serves(self, conn: Any) -> bool:
        """Whether CONN (a subscription's) is still connected where it should be."""
        return True

    def after_redirect(self, reply: Exception) -> None:
        """A reply said a command did not run (redirects.not_run): nothing to learn, but a
        cluster's redirect is raised (the URL names a cluster node as one server)."""
        if from_a_cluster(reply):
            raise reply

    def after_lost_connection(self) -> None:
        """A connection failed: the next one connects afresh."""

    def client_at(self, address: Address) -> redis.Redis | None:
        return self.client  # type: ignore[no-any-return]

    def client_for(self, key: str) -> redis.Redis:
        return self.client  # type: ignore[no-any-return]

    def address_of(self, key: str) -> Address:
        return self.masters()[0][0]

    def masters(self) -> list[tuple[Address, redis.Redis]]:
        kwargs = self.client.connection_pool.connection_kwargs
        address = kwargs.get("path") or (kwargs.get("host", "localhost"),
                                         int(kwargs.get("port", 6379)))
        return [(address, self.client)]

    def close(self) -> None:
        self.client.close()
        self._blocking.close()


class SentinelNodes(OneServer):
    """The master the Sentinels name (module docstring)."""

    def __init__(self, client: redis.Redis, blocking: redis.Redis) -> None:
        super().__init__(client, blocking)
        self._master: Address | None = None
        self._checked_at = 0.0
        self._checking = threading.Lock()

    def master(self) -> Address | None:
        """The master's address as the Sentinels named it last (None: not asked yet),
        asked again when MASTER_CHECK_S has passed (by one thread; a Sentinel that does
        not answer leaves the last answer in place)."""
        now = time.monotonic()
        if now - self._checked_at >= MASTER_CHECK_S and self._checking.acquire(False):
            try:
                self._checked_at = now
                # redis-py's pool drops its idle connections too when the master changed
                self._master = tuple(self.client.connection_pool.get_master_address())
            except redis.RedisError as exc:
                log.debug("the Sentinels did not say who the master is: %s", exc)
            finally:
                self._checking.release()
        return self._master

    def fresh(self, conn: Any) -> None:
        if not self.serves(conn):
            conn.disconnect()
            conn.connect()  # asks the Sentinels (module docstring)

    def serves(self, conn: Any) -> bool:
        master = self.master()
        return master is None or conn._sock is None or address_of(conn) == master

    def client_at(self, address: Address) -> redis.Redis | None:
        return self.client if self.master() in (None, address) else None

    def masters(self) -> list[tuple[Address, redis.Redis]]:
        return [(tuple(self.client.connection_pool.get_master_address()), self.client)]

    def close(self) -> None:
        super().close()
        for client in (self.client, self._blocking):
            pool: Any = client.connection_pool
            pool.sentinel_manager.close()  # the Sentinels' own connections


class ClusterNodes:
    """A Redis Cluster: a key goes to the master of its slot, on that node's pool."""

    def __init__(self, make: Callable[..., RedisCluster], blocking_timeout_s: float) -> None:
        self._make, self._blocking_timeout_s = make, blocking_timeout_s
        self._lock = threading.Lock()
        self._cluster: RedisCluster | None = None
        self._blocking_pools: dict[str, Any] = {}
        self._refreshed_at = 0.0

    @property
    def client(self) -> RedisCluster:
        """redis-py's cluster client (made on first use: it reads the slot map)."""
        cluster = self._cluster
        if cluster is None:
            with self._lock:
                if self._cluster is None:
                    try:
                        self._cluster = self._make()
                    except RedisClusterException as exc:
                        raise redis.ConnectionError(reason(exc)) from exc
                cluster = self._cluster
        return cluster

    def fresh(self, conn: Any) -> None:
        """A node that lost its slots says so itself (MOVED), and one that died fails."""

    def serves(self, conn: Any) -> bool:
        return True  # a moved slot unsubscribes its listeners itself (sunsubscribe)

    def node_for(self, key: str) -> Any:
        cluster = self.client
        try:
            return cluster.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        except RedisClusterException as exc:  # a slot no master serves (yet)
            self.refresh()
            raise redis.ConnectionError(reason(exc)) from exc

    def pool(self, key: str, blocking: bool) -> Any:
        node = self.node_for(key)
        if not blocking:
            return node.redis_connection.connection_pool
        pool = self._blocking_pools.get(node.name)
        if pool is None:
            base = node.redis_connection.connection_pool
            pool = base.__class__(connection_class=base.connection_class, **{
                **base.connection_kwargs, "socket_timeout": self._blocking_timeout_s})
            self._blocking_pools[node.name] = pool
        return pool

    def after_redirect(self, reply: Exception) -> None:
        if type(reply) is MovedError:
            self.client.nodes_manager.move_slot(reply)
        elif refreshes_map(reply):
            self.refresh()

    def after_lost_connection(self) -> None:
        self.refresh()  # the node may be gone, its slots served by another by now

    def refresh(self) -> None:
        """Read the slot map again (at most every REFRESH_EVERY_S); quietly keep the old
        one when no node answers."""
        now = time.monotonic()
        if now - self._refreshed_at < REFRESH_EVERY_S or self._cluster is None:
            return
        self._refreshed_at = now
        try:
            self._cluster.nodes_manager.initialize()
        except (RedisClusterException, redis.RedisError) as exc:
            log.debug("could not read the cluster's slot map: %s", exc)

    def client_at(self, address: Address) -> redis.Redis | None:
        if not isinstance(address, tuple):
            return None
        node = cast(Any, self.client).get_node(host=address[0], port=address[1])
        return None if node is None else node.redis_connection

    def client_for(self, key: str) -> redis.Redis:
        return self.node_for(key).redis_connection  # type: ignore[no-any-return]

    def address_of(self, key: str) -> Address:
        node = self.node_for(key)
        return (node.host, int(node.port))

    def masters(self) -> list[tuple[Address, redis.Redis]]:
        return [((n.host, int(n.port)), n.redis_connection)
                for n in cast(Any, self.client).get_primaries()]

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
        for pool in self._blocking_pools.values():
            pool.disconnect()
