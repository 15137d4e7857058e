"""Which server a command goes to, and what to do when the deployment says it went to the
wrong one: the layer between store.py and redis-py, for every kind of deployment
(deployment.py). `Router` serves threads; async_routing.py holds its asyncio twin. What
each kind does with a key is in nodes.py (one server, the master behind Sentinels, the
master of a key's slot in a cluster); the rules for redirects are in redirects.py, which
both routers follow.

`Router.send` writes commands in one write on one connection (blocking.exchange) and
reads their replies. A reply that says its command did not run (redirects.not_run: MOVED,
ASK, TRYAGAIN, CLUSTERDOWN, UNBLOCKED, NOSCRIPT, NOREPLICAS, or a script stopped at its
first touch of a key that had moved) is safe to send again, whatever the command (a claim
included): the router updates the slot map (MOVED) or waits (the rest), and sends those
commands again, a script as EVAL after NOSCRIPT. Replies of commands that ran are kept.
After REROUTE_LIMIT_S of this, `Rerouted` (a ConnectionError: callers retry it as they
retry an unreachable server). A lost connection is never replayed here: whoever sent a
claim knows how to recover (fetching.py's reconcile).

ASK is never followed: in a slot being migrated, a script run on the importing node
(ASKING) would read keys that have not moved yet as missing. Scripts wait until the slot
has moved (MOVED), as commands over several keys must anyway (TRYAGAIN). Every script
reads the keys it touches outside KEYS before its first write (scripts/_lib.lua,
``touch``), so a key that moved stops it before it changed anything.

With ``wait_replicas`` (config), each write is followed by WAIT on its connection, in the
same round trip: `redirects.NotReplicated` (a ConnectionError) when too few replicas
acknowledged it in time, so the caller sends it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .blocking import Address, BlockedConnections, exchange
from .config import redact_url
from .connection import (
    CHECK_TIMEOUT_S,
    LOADING_WAIT_S,
    RETRYABLE,
    RedisRetry,
    cluster_client,
    connect,
    reason,
    retrying,
    sentinel_master,
)
from .deployment import parse_deployment
from .errors import RedisUnavailable, SandboxRunnerError
from .idle_connections import IdleConnections
from .nodes import BLOCKING_SOCKET_SLACK_S, ClusterNodes, Nodes, OneServer, SentinelNodes
from .redirects import Command, Replicas, Rerouting, not_run, replicated, resend
from .redis_errors import REDIS_ERRORS, REDIS_OR_SOCKET_ERRORS, curable, translate

log = logging.getLogger(__name__)

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
        self._idle = IdleConnections()

    def _open(self, extra: dict[str, Any], block_timeout_s: float) -> Nodes:
        d = self.deployment
        blocking = {**extra, "socket_timeout": block_timeout_s + BLOCKING_SOCKET_SLACK_S}
        if d.kind == "cluster":
            return ClusterNodes(lambda: cluster_client(d, **extra), blocking["socket_timeout"])
        if d.kind == "sentinel":
            return SentinelNodes(sentinel_master(d, **extra), sentinel_master(d, **blocking))
        return OneServer(connect(self.url, **extra), connect(self.url, **blocking))

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
        return self._nodes.client_for(key)

    def address_of(self, key: str) -> Address:
        """The address of the server holding KEY now."""
        return self._nodes.address_of(key)

    def masters(self) -> list[tuple[Address, redis.Redis]]:
        """The address and a client of each master (one, unless a cluster)."""
        return self._nodes.masters()

    def send(self, key: str, commands: Sequence[Command], *, blocking: bool = False,
             replicas: Replicas | None = None) -> list[Any]:
        """COMMANDS in one write to the server holding KEY, their replies in order (an
        error reply in its place); commands that did not run are sent again (module
        docstring). REPLICAS (how many, within how many ms): each write is followed by a
        WAIT on the same connection, and `NotReplicated` raised when too few replicas
        acknowledged it."""
        replies = self._exchange(key, commands, blocking, replicas)
        for reply in replies:
            if isinstance(reply, redis.ResponseError) and not_run(reply):
                return self._resend(key, commands, replies, blocking, replicas)
        return replies

    def _resend(self, key: str, commands: Sequence[Command], replies: list[Any],
                blocking: bool, replicas: Replicas | None) -> list[Any]:
        rerouting = Rerouting(self.where)

        def pause(reply: Exception) -> None:
            self._nodes.after_redirect(reply)
            pause_s = rerouting.pause_s(reply)
            if pause_s:
                time.sleep(pause_s)

        return resend(commands, replies, self.scripts, pause,
                      lambda again: self._exchange(key, again, blocking, replicas))

    def _exchange(self, key: str, commands: Sequence[Command], blocking: bool,
                  replicas: Replicas | None = None) -> list[Any]:
        pool = self._nodes.pool(key, blocking)
        # redis-py's Connection methods are untyped; a blocking read takes a pool
        # connection of its own, every other send an idle one (idle_connections.py)
        conn: Any = pool.get_connection() if blocking else self._idle.take(pool)
        try:
            self._nodes.fresh(conn)
            if replicas is not None:
                return replicated(exchange(conn, [*commands, ("WAIT", *replicas)]), replicas,
                                  self.where)
            if blocking:
                with self.blocked.blocking(conn):
                    return exchange(conn, commands)
            return exchange(conn, commands)
        except (redis.ConnectionError, redis.TimeoutError):
            self._nodes.after_lost_connection()
            raise
        finally:
            if blocking:
                pool.release(conn)
            else:
                self._idle.give_back(pool, conn)

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

    def still_current(self, pubsub: Any) -> bool:
        """Whether PUBSUB (from `subscribe`) is still on the server it should be on (behind
        Sentinels: the master; they are asked at most once a second)."""
        return pubsub.connection is None or bool(self._nodes.serves(pubsub.connection))

    def close(self) -> None:
        self._idle.close()
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
    except REDIS_ERRORS as exc:
        raise _unreachable(url, exc) from exc
    try:
        retry = RedisRetry(url, "reach it", LOADING_WAIT_S, retry_on=(redis.BusyLoadingError,))
        retrying(lambda: [client.ping() for _address, client in router.masters()], retry)
    except REDIS_OR_SOCKET_ERRORS as exc:
        raise _unreachable(url, exc) from exc
    finally:
        router.close()


def _unreachable(url: str, exc: BaseException) -> SandboxRunnerError:
    """Our error for a failed check: a refused login, a TLS failure or a wrong kind of
    server says what it is (redis_errors.py); anything else is an unreachable server."""
    if isinstance(exc, REDIS_ERRORS) and not (isinstance(exc, RETRYABLE) and curable(exc)):
        return translate(exc, url, "connect")
    return RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {reason(exc)}; check "
                            "that the server runs and the URL points at it")
