"""Connections to Redis, and the one rule for a Redis that does not answer yet.

`resolve_redis_url` says which Redis a project uses: the configured URL, else the
project's embedded server (embedded.py), started if need be. Every redis-py client
sandboxrunner opens is built here, for the kind of deployment the URL names
(deployment.py): `connect` for one server, `cluster_client` for a Redis Cluster,
`sentinel_master` for the master Sentinels name, and their asyncio twins. All have
keepalive on, and a connect or TLS handshake that hangs gives up after CONNECT_TIMEOUT_S. Only
routing.py (which sends every command to the right node) and check_reachable call them.

`RedisRetry` is the rule every caller-side path follows while Redis is unreachable or
still loading its data after a restart (a server that answers INFO while it loads is not
ready: every other command gets ``LOADING``, which redis-py raises as `BusyLoadingError`,
a `ConnectionError`): retry with a doubling backoff until a time limit has passed, then
raise `RedisUnavailable`, one line naming the address without its password. `retrying`
and `aretrying` run a call under the rule, on a thread and on an event loop, so the sync
and asyncio paths cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelManagedSSLConnection

from .config import Config, project_hint, redact_url
from .deployment import Deployment
from .errors import ConfigError, RedisUnavailable
from .redis_errors import curable

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
ASYNC_POOL_SIZE = 32
CHECK_TIMEOUT_S = 2.0  # check_reachable: a server this slow to answer counts as down
LOADING_WAIT_S = 10.0  # check_reachable waits this long for a restarted server to load
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0
RETRYABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)


def resolve_redis_url(config: Config) -> str:
    """CONFIG's Redis URL, else the URL of its project's embedded server (started if need
    be); ConfigError outside any project (an embedded server belongs to a project)."""
    if config.redis_url:
        return config.redis_url
    if not config.project_found:
        raise ConfigError(f"no Redis URL is configured (REDIS_URL) and {project_hint(config)}")
    from .embedded import ensure_embedded

    return ensure_embedded(config.project_dir)


def connect(url: str, **kwargs: Any) -> redis.Redis:
    """A client for URL; socket keepalive on, so a dead peer is noticed; a connect (and
    TLS handshake) that hangs gives up after CONNECT_TIMEOUT_S."""
    kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
    return redis.Redis.from_url(url, health_check_interval=30, **_keepalive(url), **kwargs)


def caller_retry() -> Retry:
    """redis-py's retry for callers' clients: none. `RedisRetry` governs their waits, and
    a reply connection must never reconnect behind the listener's back (it re-reads
    what it missed only when it sees the connection fail)."""
    return Retry(NoBackoff(), 0)


def async_client(url: str) -> aioredis.Redis:
    """An asyncio client for URL on a bounded pool that waits for a free connection:
    thousands of concurrent arun_job calls share ASYNC_POOL_SIZE connections. Its retry
    is `caller_retry`'s."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=ASYNC_POOL_SIZE, timeout=None, **_keepalive(url),
        socket_connect_timeout=CONNECT_TIMEOUT_S, retry=AsyncRetry(NoBackoff(), 0))
    return aioredis.Redis.from_pool(pool)


def node_kwargs(deployment: Deployment, host: str, port: int) -> dict[str, Any]:
    """The connection settings of one node of a cluster or Sentinel deployment, as redis-py
    reads them from a one-server URL (deployment.node_url), without the address and the
    connection class (TLS is `tls` in the deployment), plus keepalive and the connect
    timeout."""
    kwargs: dict[str, Any] = cast(Any, parse_url)(deployment.node_url(host, port))
    for name in ("host", "port", "connection_class"):
        kwargs.pop(name, None)
    kwargs.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
    return {"socket_keepalive": True, **kwargs}


def cluster_client(deployment: Deployment, *, retry: Retry | None = None,
                   **overrides: Any) -> RedisCluster:
    """A client of the Redis Cluster DEPLOYMENT names; it reads the slot map from the first
    node that answers (RedisClusterException when none does)."""
    host, port = deployment.addresses[0]
    kwargs = {**node_kwargs(deployment, host, port), **overrides}
    kwargs.pop("db", None)
    if deployment.tls:
        kwargs["connection_class"] = redis.SSLConnection
    if retry is not None:
        kwargs["retry"] = retry
    nodes = [cast(Any, ClusterNode)(h, p) for h, p in deployment.addresses]
    return RedisCluster(startup_nodes=nodes, **kwargs)


SentinelState = dict[str, Any]


def newest_master(states: list[SentinelState],
                  good: Callable[[SentinelState], bool]) -> tuple[str, int] | None:
    """The master address of the newest configuration (highest config epoch) among the
    Sentinels' STATES that GOOD accepts (a master, not down); None if none does."""
    found = [state for state in states if good(state)]
    if not found:
        return None
    # the failover's leader names the old master until it has finished: below the others
    best = max(found, key=lambda state: (int(state.get("config-epoch", 0)),
                                         "failover_in_progress" not in str(state["flags"])))
    return str(best["ip"]), int(best["port"])


class _NewestMasterSentinel(Sentinel):
    """Sentinels that name the master of the newest configuration any of them knows. While
    they learn of a failover from its leader (hello messages, every 2 s) they disagree
    for a couple of seconds, and redis-py's Sentinel takes the first one's word: writes
    would go on reaching the demoted master, to be thrown away when it resyncs."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        states: list[SentinelState] = []
        for sentinel in self.sentinels:
            try:
                states.append(cast(SentinelState, sentinel.sentinel_master(service_name)))
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                continue  # a Sentinel down or not watching it: ask the others
        check: Any = self.check_master_state
        found = newest_master(states, lambda s: bool(check(s, service_name)))
        if found is None:
            raise MasterNotFoundError(f"no Sentinel names a master for {service_name!r}")
        return found


class _NewestMasterAsyncSentinel(aiosentinel.Sentinel):
    """The asyncio twin of `_NewestMasterSentinel`."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        states: list[SentinelState] = []
        for sentinel in self.sentinels:
            try:
                states.append(cast(SentinelState, await sentinel.sentinel_master(service_name)))
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                continue
        check: Any = self.check_master_state
        found = newest_master(states, lambda s: bool(check(s, service_name)))
        if found is None:
            raise MasterNotFoundError(f"no Sentinel names a master for {service_name!r}")
        return found


def sentinel_master(deployment: Deployment, *, retry: Retry | None = None,
                    **overrides: Any) -> redis.Redis:
    """A client of the master the Sentinels of DEPLOYMENT name (the newest configuration
    any of them knows): each connection asks them where it is when it connects, and one
    that finds its server demoted to a replica (READONLY) drops itself, so the next
    connects to the new master (nodes.SentinelNodes also moves one whose server is no
    longer the master before using it)."""
    host, port = deployment.addresses[0]
    kwargs = {**node_kwargs(deployment, host, port), **overrides}
    if deployment.tls:
        kwargs["connection_class"] = SentinelManagedSSLConnection
    if retry is not None:
        kwargs["retry"] = retry
    sentinels: Any = cast(Any, _NewestMasterSentinel)(
        list(deployment.addresses),
        sentinel_kwargs=_sentinel_kwargs(deployment, Retry(NoBackoff(), 0)))
    return cast(redis.Redis, sentinels.master_for(deployment.service, **kwargs))


def _sentinel_kwargs(deployment: Deployment, retry: Any) -> dict[str, Any]:
    """How to talk to the Sentinels themselves: their own credentials, TLS as the nodes,
    and a bound on each call, never retried (a dead Sentinel is skipped for the next)."""
    kwargs: dict[str, Any] = {"socket_connect_timeout": CHECK_TIMEOUT_S,
                              "socket_timeout": CHECK_TIMEOUT_S, "retry": retry}
    if deployment.tls:
        kwargs["ssl"] = True
    return {**kwargs, **deployment.sentinel_auth}


def async_cluster_client(deployment: Deployment) -> aiocluster.RedisCluster:
    """The asyncio twin of `cluster_client` (it reads the slot map on first use), with
    caller_retry's rule: no retries of its own."""
    host, port = deployment.addresses[0]
    kwargs = node_kwargs(deployment, host, port)
    kwargs.pop("db", None)
    if deployment.tls:
        kwargs["connection_class"] = aioredis.SSLConnection
    nodes = [aiocluster.ClusterNode(h, p) for h, p in deployment.addresses]
    return aiocluster.RedisCluster(startup_nodes=nodes, retry=AsyncRetry(NoBackoff(), 0),
                                   max_connections=ASYNC_POOL_SIZE * 2, **kwargs)


def async_node_client(deployment: Deployment, host: str, port: int) -> aioredis.Redis:
    """An asyncio client of one node of a cluster (a reply subscription goes to the node
    of its queue), with caller_retry's rule."""
    kwargs = node_kwargs(deployment, host, port)
    if deployment.tls:
        kwargs["connection_class"] = aioredis.SSLConnection
    return aioredis.Redis(host=host, port=port, retry=AsyncRetry(NoBackoff(), 0), **kwargs)


def async_sentinel_master(deployment: Deployment) -> aioredis.Redis:
    """The asyncio twin of `sentinel_master`, with caller_retry's rule."""
    host, port = deployment.addresses[0]
    kwargs = node_kwargs(deployment, host, port)
    if deployment.tls:
        kwargs["ssl"] = True
    sentinels: Any = cast(Any, _NewestMasterAsyncSentinel)(
        list(deployment.addresses),
        sentinel_kwargs=_sentinel_kwargs(deployment, AsyncRetry(NoBackoff(), 0)))
    return cast(aioredis.Redis, sentinels.master_for(
        deployment.service, retry=AsyncRetry(NoBackoff(), 0), **kwargs))


def _keepalive(url: str) -> dict[str, Any]:
    # TCP keepalive notices a dead peer; a unix socket has no such option (redis-py
    # refuses it there)
    return {} if url.startswith("unix://") else {"socket_keepalive": True}


def check_reachable(url: str) -> None:
    """Return once URL's deployment answers PING (routing.check_reachable has the rule)."""
    from .routing import check_reachable as check  # routing builds on this module

    check(url)


def reason(exc: BaseException) -> str:
    """EXC's text as one clause of a longer message: one line, no closing full stop."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.rstrip(" .;:")


class RedisRetry:
    """The rule for a call that cannot reach Redis (or finds it loading): retry with a
    doubling backoff until LIMIT_S has passed, then raise RedisUnavailable. DOING says
    what the call is for ("enqueue job 'echo'"), in the log lines and the error."""

    def __init__(self, url: str, doing: str, limit_s: float,
                 retry_on: tuple[type[Exception], ...] = RETRYABLE) -> None:
        self.url, self.doing, self.limit_s, self.retry_on = url, doing, limit_s, retry_on
        self.deadline = time.monotonic() + limit_s
        self.backoff_s = BACKOFF_FIRST_S

    def delay_s(self, exc: Exception) -> float:
        """How long to wait before the next try; raises RedisUnavailable past the limit,
        and EXC itself when no retry can cure it (a refused login, a TLS failure)."""
        if not curable(exc):
            raise exc
        left_s = self.deadline - time.monotonic()
        if left_s <= 0:
            raise RedisUnavailable(self._message(exc)) from exc
        delay_s = min(self.backoff_s, left_s)
        self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)
        log.warning("%s; retrying in %.2f s", self._trouble(exc), delay_s)
        return delay_s

    def _trouble(self, exc: Exception) -> str:
        where = redact_url(self.url)
        if isinstance(exc, redis.BusyLoadingError):
            return f"Redis at {where} is still loading its data, so cannot {self.doing} yet"
        return f"cannot reach Redis at {where} to {self.doing}: {reason(exc)}"

    def _message(self, exc: Exception) -> str:
        if isinstance(exc, redis.BusyLoadingError):
            return (f"{self._trouble(exc)} (waited {self.limit_s:g} s); try again once it "
                    "has loaded")
        where = redact_url(self.url)
        return (f"cannot reach Redis at {where} to {self.doing} (tried for {self.limit_s:g} "
                f"s): {reason(exc)}; check that the server runs and the URL points at it")


def retrying(call: Callable[[], T], retry: RedisRetry) -> T:
    """CALL's result, tried again under RETRY's rule while Redis does not answer."""
    while True:
        try:
            return call()
        except retry.retry_on as exc:
            time.sleep(retry.delay_s(exc))


async def aretrying(call: Callable[[], Awaitable[T]], retry: RedisRetry) -> T:
    """The asyncio twin of `retrying`."""
    while True:
        try:
            return await call()
        except retry.retry_on as exc:
            await asyncio.sleep(retry.delay_s(exc))
