"""Connections to Redis, and the one rule for a Redis that does not answer yet.

`resolve_redis_url` says which Redis a project uses: the configured URL, else the
project's embedded server (embedded.py), started if need be. Every client comes from
`connect` (or `async_client` for asyncio callers): keepalive on,
a connect or TLS handshake that hangs gives up after CONNECT_TIMEOUT_S, and a TLS
handshake never overlaps a fork of the process pool.

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
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import Config, project_hint, redact_url
from .errors import ConfigError, RedisUnavailable
from .forkguard import FORK_GUARD
from .redis_errors import curable, translate

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
ASYNC_POOL_SIZE = 32
CHECK_TIMEOUT_S = 2.0  # check_reachable: a server this slow to answer counts as down
LOADING_WAIT_S = 10.0  # check_reachable waits this long for a restarted server to load
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0
RETRYABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)


class _GuardedSSLConnection(redis.SSLConnection):
    """A TLS connection whose handshake never overlaps a fork of the process pool."""

    def _connect(self) -> Any:
        with FORK_GUARD.shared():
            return super()._connect()  # type: ignore[no-untyped-call]


class _GuardedAsyncSSLConnection(aioredis.SSLConnection):
    """The asyncio twin: a fork waits while the handshake is awaited (a handshake waits
    only while a fork is under way, so the event loop is held up for a fork at most)."""

    async def _connect(self) -> None:
        with FORK_GUARD.shared():
            await super()._connect()  # type: ignore[no-untyped-call]


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
    if url.startswith("rediss://"):
        kwargs.setdefault("connection_class", _GuardedSSLConnection)
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
    if url.startswith("rediss://"):  # from_url would override a connection_class given
        pool.connection_class = _GuardedAsyncSSLConnection
    return aioredis.Redis.from_pool(pool)


def _keepalive(url: str) -> dict[str, Any]:
    # TCP keepalive notices a dead peer; a unix socket has no such option (redis-py
    # refuses it there)
    return {} if url.startswith("unix://") else {"socket_keepalive": True}


def check_reachable(url: str) -> None:
    """Return once URL answers PING; a server still loading its data is waited for (up
    to LOADING_WAIT_S). Raises RedisUnavailable naming the address (without password)."""
    client = connect(url, socket_connect_timeout=CHECK_TIMEOUT_S,
                     socket_timeout=CHECK_TIMEOUT_S)
    try:
        retry = RedisRetry(url, "reach it", LOADING_WAIT_S, retry_on=(redis.BusyLoadingError,))
        retrying(client.ping, retry)
    except (redis.RedisError, OSError) as exc:
        if isinstance(exc, redis.RedisError) and not (isinstance(exc, RETRYABLE)
                                                      and curable(exc)):  # login, TLS...
            raise translate(exc, url, "connect") from exc
        raise RedisUnavailable(f"cannot reach Redis at {redact_url(url)}: {reason(exc)}; "
                               "check that the server runs and the URL points at it") from exc
    finally:
        client.close()


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
