"""What a Redis failure means to a user: redis-py's errors turned into ours.

`translate` is the one translation. The public API (client.py: run_job, arun_job, enqueue,
get_result, through `api_boundary`) and the CLI (cli_support.reports_errors) apply it at
their boundary, so no
redis-py error reaches a user: each becomes one line naming the server (never its
password), what could not be done, and what to do.

  redis-py says                          ours                    what to do
  ConnectionError, TimeoutError, LOADING RedisUnavailable        start it, fix the URL
  OutOfMemoryError (OOM)                 RedisFull               raise maxmemory, free memory
  NoPermissionError (NOPERM), an ACL     RedisPermissionDenied   grant the command, the keys
    failure inside a script                                      PREFIX:* or channels
  ReadOnlyError (READONLY)               RedisReadOnly           point at the master
  AuthenticationError (WRONGPASS,        RedisAuthFailed         fix the user and password
    NOAUTH), HELLO before AUTH
  an SSL error while connecting          RedisTLSFailed          fix the scheme or the CA
  MOVED, ASK, CLUSTERDOWN, CROSSSLOT     RedisWrongServer        redis+cluster:// URL
  unknown command, or a Sentinel's       RedisWrongServer        redis+sentinel:// URL, or
    refusal (a Sentinel, an old server)                          Redis 7+ / Valkey
  MISCONF and any other error reply      RedisRefused            what Redis said

`curable` tells the retry rule (connection.RedisRetry) which connection errors a retry
may cure: a refused login or a certificate that does not verify never will, so those are
raised at once instead of after the retry's time limit.
"""

from __future__ import annotations

import functools
import inspect
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis
from redis.exceptions import RedisClusterException

from . import errors
from .config import redact_url

# Everything redis-py raises about Redis (a cluster client's own errors are not RedisErrors)
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException)
REDIS_OR_SOCKET_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError)

# Where a server says the script ran into an ACL (Redis 7 / Valkey 8+); a plain NOPERM
# reply has its own class
_SCRIPT_ACL = re.compile(r"user executing the script can't|ACL failure in script", re.I)
_COMMAND = re.compile(r"run the '([^']+)' command")
_PIPELINED = re.compile(r"^Command # \d+ \(([^)]*)\) of pipeline caused error: ")
_SCRIPT_TRAILER = re.compile(r"\s*script: [0-9a-f]*,? ?on @user_script:\d+\.?\s*$")
_TLS_WORDS = ("ssl", "tls", "certificate", "handshake", "wrong version number")


@dataclass(frozen=True)
class Trouble:
    """What went wrong, as the messages below say it."""

    where: str  # "Redis at redis://:***@host:6379"
    doing: str  # what could not be done
    said: str  # what Redis (or the socket) said, one clause
    user: str  # the ACL user the URL logs in as
    prefix: str  # the key prefix
    command: str  # the pipelined command that failed ("HGETALL sr:{sr:default}:cron"), or ""


_Maker = Callable[[Trouble], errors.SandboxRunnerError]
Method = TypeVar("Method", bound=Callable[..., Any])


def curable(exc: BaseException) -> bool:
    """Whether retrying may cure EXC: not for a refused login or a TLS connection that
    failed (the server speaks no TLS, its certificate does not verify, or its handshake
    got no answer for the whole connect timeout, which leaves no time to retry)."""
    return not (isinstance(exc, redis.AuthenticationError) or _is_tls(exc))


def translate(exc: BaseException, url: str, doing: str,
              prefix: str = "sr") -> errors.SandboxRunnerError:
    """Our error for EXC, raised by redis-py while trying to DOING (a verb phrase: "enqueue
    job 'echo'") on URL's server; PREFIX: the key prefix (config key_prefix), which an
    ACL must grant."""
    if isinstance(exc, errors.SandboxRunnerError):
        return exc
    text = " ".join(str(exc).split())
    pipelined = _PIPELINED.match(text)
    said = _SCRIPT_TRAILER.sub("", _PIPELINED.sub("", text))
    said = said.split(", with args beginning with:")[0].rstrip(" .;:")  # unknown command
    if isinstance(exc, redis.exceptions.AskError):  # redis-py keeps only "SLOT HOST:PORT"
        said = f"{'MOVED' if isinstance(exc, redis.exceptions.MovedError) else 'ASK'} {said}"
    trouble = Trouble(where=f"Redis at {redact_url(url)}" if url else "Redis", doing=doing,
                      said=said or type(exc).__name__, user=_user(url), prefix=prefix,
                      command=pipelined.group(1) if pipelined else "")
    return _maker(exc, trouble.said)(trouble)


def _maker(exc: BaseException, said: str) -> _Maker:
    if isinstance(exc, redis.OutOfMemoryError):
        return _full
    if isinstance(exc, redis.exceptions.NoPermissionError) or _SCRIPT_ACL.search(said):
        return _no_permission
    if isinstance(exc, redis.ReadOnlyError):
        return _read_only
    if isinstance(exc, redis.AuthenticationError) or "HELLO must be called" in said:
        return _auth
    if _is_tls(exc):
        return _tls
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return _unreachable
    if _is_cluster(exc, said):
        return _cluster_node
    if said.lower().startswith("unknown command") or "sentinel" in said.lower():
        return _unknown_command
    return _refused


def _is_tls(exc: BaseException) -> bool:
    """Whether connecting failed in the TLS handshake (redis-py keeps the SSL error only
    as the cause, or in its text)."""
    if not isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return False
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
        if isinstance(seen, ssl.SSLError) or any(word in text for word in _TLS_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_cluster(exc: BaseException, said: str) -> bool:
    return (isinstance(exc, redis.exceptions.AskError | redis.exceptions.ClusterError
                        | redis.exceptions.ClusterCrossSlotError | RedisClusterException)
            or said.startswith(("MOVED", "ASK", "CLUSTERDOWN", "CROSSSLOT")))


def _user(url: str) -> str:
    """The ACL user the URL logs in as ('default' when it names none)."""
    authority = url.partition("://")[2].split("/", 1)[0]
    if "@" not in authority:
        return "default"
    return authority.rpartition("@")[0].partition(":")[0] or "default"


def _full(t: Trouble) -> errors.SandboxRunnerError:
    return errors.RedisFull(
        f"{t.where} is full: it reached its maxmemory and refused to {t.doing} ({t.said}); "
        f"nothing was written. Raise maxmemory or free memory: supervisors still run the "
        f"jobs already queued, and results expire after result_ttl")


def _no_permission(t: Trouble) -> errors.SandboxRunnerError:
    command = _COMMAND.search(t.said)
    if command:
        what, grant = f"the command {command.group(1).upper()}", f"+{command.group(1).lower()}"
    elif "channel" in t.said.lower():
        what, grant = f"a channel of {t.prefix}:*", f"the channels &{t.prefix}:*"
    else:
        what = f"the key of {t.command}" if t.command else f"a key of {t.prefix}:*"
        grant = f"the keys ~{t.prefix}:*"
    return errors.RedisPermissionDenied(
        f"{t.where} refused user {t.user!r} {what}, so cannot {t.doing} (NOPERM: {t.said}); "
        f"grant the user {grant} (sandboxrunner needs ~{t.prefix}:* &{t.prefix}:* and the "
        f"commands the README lists under ACL)")


def _read_only(t: Trouble) -> errors.SandboxRunnerError:
    return errors.RedisReadOnly(
        f"{t.where} is a read-only replica, so cannot {t.doing} ({t.said}): point the URL at "
        f"the master, or let Sentinel find it (redis+sentinel://host:26379/MASTER-NAME)")


def _auth(t: Trouble) -> errors.SandboxRunnerError:
    return errors.RedisAuthFailed(
        f"{t.where} refused the login of user {t.user!r}, so cannot {t.doing} ({t.said}): "
        f"check the user name and password in the URL (redis://USER:PASSWORD@host:port)")


def _tls(t: Trouble) -> errors.SandboxRunnerError:
    return errors.RedisTLSFailed(
        f"{t.where}: the TLS connection failed, so cannot {t.doing} ({t.said}); rediss:// "
        f"needs a server that speaks TLS (redis:// for one that does not), and a "
        f"certificate the system trusts or one given with ?ssl_ca_certs=/path/to/ca.pem")


def _unreachable(t: Trouble) -> errors.SandboxRunnerError:
    return errors.RedisUnavailable(
        f"cannot reach {t.where} to {t.doing}: {t.said}; check that the server runs and the "
        f"URL points at it")


def _cluster_node(t: Trouble) -> errors.SandboxRunnerError:
    return errors.RedisWrongServer(
        f"{t.where} is a node of a Redis Cluster ({t.said}), so cannot {t.doing} through a "
        f"redis:// URL: give the cluster's nodes as redis+cluster://host:port,host:port/")


def _unknown_command(t: Trouble) -> errors.SandboxRunnerError:
    return errors.RedisWrongServer(
        f"{t.where} does not take a command sandboxrunner needs, so cannot {t.doing} "
        f"({t.said}): is it a Sentinel (use redis+sentinel://host:26379/MASTER-NAME) "
        f"or a server older than Redis 7.0? sandboxrunner needs Redis 7.0+ or Valkey")


def _refused(t: Trouble) -> errors.SandboxRunnerError:
    return errors.RedisRefused(f"{t.where} refused to {t.doing}: {t.said}")


def api_boundary(doing: str) -> Callable[[Method], Method]:
    """Decorate a method of the public API (client.Client: its `url` and `config` name the
    server and the key prefix) so that whatever redis-py raises in it becomes our error.
    DOING names the call, formatted with the method's first argument ("run job {!r}")."""

    def decorate(method: Method) -> Method:
        if inspect.iscoroutinefunction(method):
            @functools.wraps(method)
            async def acall(self: Any, first: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    return await method(self, first, *args, **kwargs)
                except REDIS_ERRORS as exc:
                    raise translate(exc, self.url, doing.format(first),
                                    self.config.key_prefix) from exc

            return cast(Method, acall)

        @functools.wraps(method)
        def call(self: Any, first: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, first, *args, **kwargs)
            except REDIS_ERRORS as exc:
                raise translate(exc, self.url, doing.format(first),
                                self.config.key_prefix) from exc

        return cast(Method, call)

    return decorate
