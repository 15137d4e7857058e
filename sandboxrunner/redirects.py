"""The rules for a reply that says a command went to the wrong server, or did not run: which
replies those are (`not_run`), what each asks of the router (update a cluster's slot map,
or wait), how long to keep at it (`Rerouting`), and how a batch is sent again (`resend`).
routing.Router and async_routing.AsyncRouter follow the same rules.

A reply that says its command did not run: MOVED and ASK (another node serves the slot),
TRYAGAIN (a command over several keys while some have moved), CLUSTERDOWN and MASTERDOWN
(no master for the slot yet), UNBLOCKED (a blocking read ended because its server became
a replica or lost the slot), NOSCRIPT (the server lacks the script: it is sent as EVAL),
NOREPLICAS (a master with too few replicas refused its first write: min-replicas-to-write),
and a script stopped at its first touch of a key that had moved (scripts/_lib.lua,
``touch``: before its first write). Sending any of them again is safe, a claim included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    TryAgainError,
)

from .connection import reason

Command = tuple[Any, ...]
Replicas = tuple[int, int]  # WAIT's arguments: how many replicas, within how many ms
REROUTE_LIMIT_S = 5.0
REROUTE_BACKOFF_FIRST_S = 0.01
REROUTE_BACKOFF_MAX_S = 0.2
REFRESH_EVERY_S = 0.1  # a cluster's slot map is read again at most this often
# the text of not-run replies redis-py has no class for
NOT_RUN_TEXTS = ("UNBLOCKED", "NOREPLICAS", "Script attempted to access a non local key")


def not_run(reply: Any) -> bool:
    """Whether REPLY says its command did not run, so sending it again is safe."""
    if isinstance(reply, (AskError, TryAgainError, ClusterDownError, NoScriptError)):
        return True  # MovedError is an AskError
    return isinstance(reply, redis.ResponseError) and str(reply).startswith(NOT_RUN_TEXTS)


def from_a_cluster(reply: Exception) -> bool:
    """Whether REPLY is one only a cluster node sends (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a
    script stopped at a key of another node): a URL naming one server, or Sentinels, that
    gets one points at a cluster node, and sending again would never help."""
    return (isinstance(reply, (AskError, TryAgainError, ClusterDownError))
            or str(reply).startswith("Script attempted to access a non local key"))


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


class NotReplicated(redis.ConnectionError):
    """Fewer replicas than asked acknowledged a write within the time given (WAIT): it
    ran, but a failover could lose it, so it counts as not done; its caller sends it
    again (an enqueue and a settlement are safe to send twice)."""


def replicated(replies: list[Any], replicas: Replicas, where: str) -> list[Any]:
    """REPLIES of commands followed by WAIT REPLICAS, without WAIT's; NotReplicated when
    fewer replicas acknowledged them."""
    *replies, acks = replies
    if isinstance(acks, Exception):
        raise acks
    if int(acks) < replicas[0]:
        raise NotReplicated(
            f"only {acks} of {replicas[0]} replica(s) of Redis at {where} acknowledged a "
            f"write within {replicas[1]} ms (wait_replicas); a failover could lose it")
    return replies
