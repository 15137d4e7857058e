"""Which server a command goes to, and what to do when the deployment says it went to the
wrong one: the layer between store.py and redis-py, for every kind of deployment
(deployment.py). `Router` serves threads; async_routing.py holds its asyncio twin, and
both follow the rules kept here (`not_run`, `Rerouting`).

What each kind does with a key:

  single    one server: every key goes to its pool
  sentinel  the master the Sentinels name: each new connection asks them where it is, and
            a connection that finds its server demoted (READONLY) drops itself
            (redis-py's SentinelManagedConnection), so the next one reaches the new master
  cluster   the master serving the key's slot, from redis-py's slot map (RedisCluster's
            NodesManager), on that node's own pool; a queue's keys share a hash tag, so
            a queue lives on one node and its scripts reach it in one round trip

`Router.send` writes commands in one write on one connection (blocking.exchange) and
reads their replies. A reply that says the command did not run (`not_run`: MOVED, ASK,
TRYAGAIN, CLUSTERDOWN, UNBLOCKED, NOSCRIPT, or a script stopped at its first touch of a
key that already moved) is safe to send again, whatever the command (a claim included):
the router updates the slot map (MOVED) or waits (the rest), and sends those commands
again, a script as EVAL after NOSCRIPT. Replies of commands that ran are kept. After
REROUTE_LIMIT_S of this, `Rerouted` (a ConnectionError: callers retry it as they retry an
unreachable server). A lost connection is never replayed here: whoever sent a claim
knows how to recover (fetching.py's reconcile).

ASK is never followed: in a slot being migrated, a script run on the importing node
(ASKING) would read keys that have not moved yet as missing. Scripts wait until the slot
has moved (MOVED), as commands over several keys must anyway (TRYAGAIN). Every script
reads the keys it touches outside KEYS before its first write (scripts/_lib.lua,
``touch``), so a key that moved stops it before it changed anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)
from redis.retry import Retry

from .blocking import Address, BlockedConnections, exchange
from .config import redact_url
from .connection import (
    CHECK_TIMEOUT_S,
    LOADING_WAIT_S,
    RedisRetry,
    cluster_client,
    connect,
    reason,
    retrying,
    sentinel_master,
)
from .deployment import parse_deployment
from .errors import RedisUnavailable

log = logging.getLogger(__name__)

Command = tuple[Any, ...]
REROUTE_LIMIT_S = 5.0
REROUTE_BACKOFF_FIRST_S = 0.01
REROUTE_BACKOFF_MAX_S = 0.2
REFRESH_EVERY_S = 0.1  # a cluster's slot map is read again at most this often
BLOCKING_SOCKET_SLACK_S = 5.0  # a blocking read's socket waits this much past its block
SCRIPT_MOVED_KEY = "Script attempted to access a non local key"


def not_run(reply: Any) -> bool:
    """Whether REPLY says its command did not run, so sending it again is safe."""
    if isinstance(reply, (AskError, TryAgainError, ClusterDownError, NoScriptError)):
        return True  # MovedError is an AskError
    return isinstance(reply, redis.ResponseError) and (
        str(reply).startswith("UNBLOCKED") or str(reply).startswith(SCRIPT_MOVED_KEY))


def refreshes_map(reply: Exception) -> bool:
    """Whether REPLY (one that `not_run`) means a cluster's roles changed, so its slot map
    is read again: CLUSTERDOWN (a master lost), UNBLOCKED (a master became a replica).
    MOVED names the new owner itself (NodesManager.move_slot); the rest ask to wait."""
    return isinstance(reply, ClusterDownError) or str(reply).startswith("UNBLOCKED")


class Rerouted(redis.ConnectionError):
    """The deployment kept sending a command elsewhere (a slot migrating for longer than
    REROUTE_LIMIT_S, a cluster down): retried like an unreachable server."""


class Rerouting:
    """One send's rerouting: what the not-run replies ask for, and the time limit."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.deadline = time.monotonic() + REROUTE_LIMIT_S
        self.backoff_s = REROUTE_BACKOFF_FIRST_S

    def pause_s(self, reply: Exception) -> float:
        """How long to wait before sending again after REPLY (0: at once); raises
        `Rerouted` past the limit."""
        if time.monotonic() > self.deadline:
            raise Rerouted(f"Redis at {self.where} kept redirecting a command for "
                           f"{REROUTE_LIMIT_S:g} s: {reason(reply)}") from reply
        if isinstance(reply, NoScriptError) or type(reply) is MovedError:
            return 0.0
        pause, self.backoff_s = self.backoff_s, min(self.backoff_s * 2, REROUTE_BACKOFF_MAX_S)
        return pause


def again(command: Command, reply: Any, scripts: Mapping[str, str]) -> Command:
    """COMMAND as it is sent again after REPLY: a script the server lacks as EVAL."""
    if isinstance(reply, NoScriptError) and command[0] == "EVALSHA" and command[1] in scripts:
        return ("EVAL", scripts[command[1]], *command[2:])
    return command


def resend(commands: Sequence[Command], replies: list[Any], scripts: Mapping[str, str],
           pause: Callable[[Exception], None], send: Callable[[list[Command]], list[Any]],
           ) -> list[Any]:
    """REPLIES, with the commands whose reply says they did not run sent again (SEND) until
    they ran; PAUSE is called with such a reply before each round."""
    while True:
        pending = [i for i, reply in enumerate(replies) if not_run(reply)]
        if not pending:
            return replies
        pause(replies[pending[0]])
        got = send([again(commands[i], replies[i], scripts) for i in pending])
        for i, reply in zip(pending, got, strict=True):
            replies[i] = reply


class _Nodes:
    """One server, or the master behind Sentinels: every key goes to one pool."""

    def __init__(self, client: redis.Redis, blocking: redis.Redis) -> None:
        self.client: Any = client
        self._blocking = blocking

    def pool(self, key: str, blocking: bool) -> Any:
        return (self._blocking if blocking else self.client).connection_pool

    def after_redirect(self, reply: Exception) -> None:
        """A reply said a command did not run (see `not_run`): nothing to learn here."""

    def after_lost_connection(self) -> None:
        """A connection failed: the next one connects afresh (behind Sentinels, to the
        master they name then)."""

    def client_at(self, address: Address) -> redis.Redis | None:
        pool = self.client.connection_pool
        master = getattr(pool, "master_address", None)  # Sentinels: the one last named
        return self.client if master is None or tuple(master) == address else None

    def client_for(self, key: str) -> redis.Redis:
        return self.client  # type: ignore[no-any-return]

    def address_of(self, key: str) -> Address:
        return self.masters()[0][0]

    def masters(self) -> list[tuple[Address, redis.Redis]]:
        pool = self.client.connection_pool
        if hasattr(pool, "get_master_address"):  # ask the Sentinels
            return [(tuple(pool.get_master_address()), self.client)]
        kwargs = pool.connection_kwargs
        address = kwargs.get("path") or (kwargs.get("host", "localhost"),
                                         int(kwargs.get("port", 6379)))
        return [(address, self.client)]

    def close(self) -> None:
        for client in (self.client, self._blocking):
            client.close()
            manager = getattr(client.connection_pool, "sentinel_manager", None)
            if manager is not None:  # the Sentinels' own connections
                manager.close()


class _ClusterNodes:
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


class Router:
    """The connections of one deployment, for one Store (module docstring)."""

    def __init__(self, url: str, *, retry: Retry | None = None,
                 socket_timeout: float | None = None, connect_timeout: float | None = None,
                 block_timeout_s: float = 1.0, scripts: Mapping[str, str] | None = None,
                 ) -> None:
        """RETRY: redis-py's retry of whole commands (`call`, `client`); None: its
        default. SCRIPTS: source by SHA1, to send a script the server lacks as EVAL."""
        self.url = url
        self.deployment = parse_deployment(url)
        self.scripts = dict(scripts or {})
        self.blocked = BlockedConnections()
        extra: dict[str, Any] = {} if retry is None else {"retry": retry}
        if socket_timeout is not None:
            extra["socket_timeout"] = socket_timeout
        if connect_timeout is not None:
            extra["socket_connect_timeout"] = connect_timeout
        self._nodes = self._open(extra, block_timeout_s)

    def _open(self, extra: dict[str, Any], block_timeout_s: float) -> Any:
        d = self.deployment
        blocking = {**extra, "socket_timeout": block_timeout_s + BLOCKING_SOCKET_SLACK_S}
        if d.kind == "cluster":
            return _ClusterNodes(lambda: cluster_client(d, **extra), blocking["socket_timeout"])
        if d.kind == "sentinel":
            return _Nodes(sentinel_master(d, **extra), sentinel_master(d, **blocking))
        return _Nodes(connect(self.url, **extra), connect(self.url, **blocking))

    @property
    def where(self) -> str:
        return redact_url(self.url)

    @property
    def client(self) -> Any:
        """redis-py's client of the whole deployment (a RedisCluster for a cluster), for
        whole commands and pipelines: it routes each command by its key itself."""
        return self._nodes.client

    def client_for(self, key: str) -> redis.Redis:
        """A client of the one server holding KEY now."""
        return self._nodes.client_for(key)  # type: ignore[no-any-return]

    def address_of(self, key: str) -> Address:
        """The address of the server holding KEY now."""
        return self._nodes.address_of(key)  # type: ignore[no-any-return]

    def masters(self) -> list[tuple[Address, redis.Redis]]:
        """The address and a client of each master (one, unless a cluster)."""
        return self._nodes.masters()  # type: ignore[no-any-return]

    def send(self, key: str, commands: Sequence[Command], *,
             blocking: bool = False) -> list[Any]:
        """COMMANDS in one write to the server holding KEY, their replies in order (an
        error reply in its place); commands that did not run are sent again (module
        docstring)."""
        replies = self._exchange(key, commands, blocking)
        for reply in replies:
            if isinstance(reply, redis.ResponseError) and not_run(reply):
                return self._resend(key, commands, replies, blocking)
        return replies

    def _resend(self, key: str, commands: Sequence[Command], replies: list[Any],
                blocking: bool) -> list[Any]:
        rerouting = Rerouting(self.where)

        def pause(reply: Exception) -> None:
            self._nodes.after_redirect(reply)
            pause_s = rerouting.pause_s(reply)
            if pause_s:
                time.sleep(pause_s)

        return resend(commands, replies, self.scripts, pause,
                      lambda again: self._exchange(key, again, blocking))

    def _exchange(self, key: str, commands: Sequence[Command], blocking: bool) -> list[Any]:
        pool = self._nodes.pool(key, blocking)
        conn: Any = pool.get_connection()  # redis-py's Connection methods are untyped
        try:
            if blocking:
                with self.blocked.blocking(conn):
                    return exchange(conn, commands)
            return exchange(conn, commands)
        except (redis.ConnectionError, redis.TimeoutError):
            self._nodes.after_lost_connection()
            raise
        finally:
            pool.release(conn)

    def interrupt_blocking(self) -> int:
        """CLIENT UNBLOCK every connection in a blocking read, on its own server; how many
        were unblocked (0: none had blocked yet)."""
        unblocked = 0
        for address, client_id in self.blocked.waiting():
            client = self._nodes.client_at(address)
            if client is not None:
                unblocked += int(client.client_unblock(client_id))
        return unblocked

    def subscribe(self, channel: str) -> Any:
        """A redis-py PubSub subscribed (SSUBSCRIBE, confirmed) to sharded CHANNEL on the
        server holding it; raises while none answers, or after SUBSCRIBE_TIMEOUT_S."""
        return subscribe_confirmed(lambda: self._nodes.client_for(channel), channel,
                                   self._nodes.after_redirect, self.where)

    def close(self) -> None:
        self._nodes.close()


SUBSCRIBE_TIMEOUT_S = 5.0


def subscribe_confirmed(client_for: Callable[[], redis.Redis], channel: str,
                        after_redirect: Callable[[Exception], None], where: str) -> Any:
    """A PubSub of CLIENT_FOR's client, SSUBSCRIBEd to CHANNEL and confirmed (a message
    published before the confirmation would be lost); a MOVED reply moves it to the node
    named (Rerouted after REROUTE_LIMIT_S)."""
    rerouting = Rerouting(where)
    while True:
        pubsub = client_for().pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.ssubscribe(channel)
            message = pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
            while message is not None and message.get("type") != "ssubscribe":
                message = pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
        except redis.ResponseError as exc:
            pubsub.close()
            if not not_run(exc):
                raise
            after_redirect(exc)
            time.sleep(rerouting.pause_s(exc))
            continue
        except BaseException:
            pubsub.close()
            raise
        if message is None:
            pubsub.close()
            raise redis.ConnectionError(f"no confirmation of SSUBSCRIBE {channel}")
        return pubsub


def check_reachable(url: str) -> None:
    """Return once URL's deployment answers PING (its master, or every master of a
    cluster); a server still loading its data is waited for (up to LOADING_WAIT_S).
    Raises RedisUnavailable naming the address (without password)."""
    try:
        router = Router(url, retry=Retry(NoBackoff(), 0), socket_timeout=CHECK_TIMEOUT_S,
                        connect_timeout=CHECK_TIMEOUT_S)
    except redis.RedisError as exc:
        raise _unreachable(url, exc) from exc
    try:
        retry = RedisRetry(url, "reach it", LOADING_WAIT_S, retry_on=(redis.BusyLoadingError,))
        retrying(lambda: [client.ping() for _address, client in router.masters()], retry)
    except (redis.RedisError, OSError) as exc:
        raise _unreachable(url, exc) from exc
    finally:
        router.close()


def _unreachable(url: str, exc: BaseException) -> RedisUnavailable:
    return RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {reason(exc)}; check "
                            "that the server runs and the URL points at it")
