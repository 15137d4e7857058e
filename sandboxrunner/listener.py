"""Pub/sub listeners: wake every caller waiting for a result.

`Listener` serves the threads of a client process; `async_listener.AsyncListener` (one
per event loop) serves asyncio callers on the loop itself. Both keep who waits for what
in an `Awaited`.

Each listener has a client id (CID) and subscribes, once per queue its callers use, to
the sharded channel ``PREFIX:{PREFIX:Q}:reply:CID`` (SSUBSCRIBE). A job records the CIDs
of its waiting callers; the finish script publishes the outcome to each (SPUBLISH).
Many concurrent callers (threads, or the asyncio tasks of one loop) therefore share one
connection per queue and nothing polls.

Why sharded pub/sub: the channel carries its queue's hash tag, so in a Redis Cluster the
finish script may publish on it (a script's keys and channels share one slot), and the
message goes to the queue's node (and its replicas) only. A classic PUBLISH is sent to
every node of a cluster. Measured on a 6-node cluster on loopback (3 masters, 3
replicas; one subscriber, 20,000 replies from a script): the same round trip (p50 0.10
ms either way, the subscriber of PUBLISH on another node), but Redis CPU per reply 29 us
with SPUBLISH (25 on the publishing master, 3 on its replica, ~0.3 elsewhere) against
63-85 us with PUBLISH (35-41 on the publishing master, 3-15 on each of the 5 others):
PUBLISH costs every node a little for every job, and more nodes cost more. The price:
Redis 7.0 or later, and a caller whose jobs run on both queues holds two reply
connections (one per queue, as each queue may live on another node). On one server or
behind Sentinels the same channels are used, on the one master.

Pub/sub drops messages while disconnected, so the listener confirms its subscription
before anyone enqueues, and after a reconnect it asks Redis for the outcome of every job
still awaited (``recheck``). A cluster that moves a queue's slot unsubscribes its
listeners (``sunsubscribe``), and behind Sentinels a subscription still on a demoted
master is found out within a reading slice (nodes.SentinelNodes): both count as a lost
connection. A message that arrives
before its waiter registered (a singleton caller attached to another caller's job) is
kept briefly in a bounded cache.

`Listener` has no thread of its own: the waiting callers take turns reading each queue's
channel (the leader/followers pattern, per queue), so a lone caller reads its own outcome
and no result crosses from a listener thread to the caller::

    reply connection --read by--> the leader (a thread in Listener.wait)
                                      | deliver(): sets the Waiter's wake
                                      v
                    itself, or a follower (asleep on its wake) --> its caller returns

- Who reads: at most one waiting thread per queue, its leader. The role guards every read
  of the connection, the reconnect and the close (redis-py's PubSub is not thread-safe).
  The leader delivers every message it reads, to itself or to other waiters.
- How the role passes: the leader leaves when its own outcome arrives or its slice of
  waiting ends (its wait_timeout, or the caller's once-per-lease re-check). Leaving, it
  hands the role to the follower that came last (its job is likely the furthest from
  done) by setting that follower's `wake` with ``promoted``; a follower handed the role
  after its own outcome or time ran out passes it on the same way. Only unread messages
  are left behind, and the next leader reads them.
- A leader that loses Redis reconnects itself: resubscribe (confirmed), then `recheck`.
  The backoff between tries (up to BACKOFF_MAX_S) belongs to the channel, so a new
  leader goes on where a leader that gave up left off.
- Nobody waiting: nobody reads. Messages stay in the socket buffer until the next
  waiter leads and delivers them (one whose waiter gave up lands in the orphan cache).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import redis

from .connection import reason
from .job import Outcome
from .job_control import PROGRESS, PROGRESS_WATCHERS
from .keys import queue_of_job
from .store import Store

log = logging.getLogger(__name__)

Callback = Callable[[Outcome], None]
W = TypeVar("W")
ORPHAN_CACHE_SIZE = 10_000
LISTEN_SLICE_S = 1.0  # below redis-py's 5 s socket timeout: an idle read never times out
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
# What a read of a lost subscription raises: redis-py's errors and the socket's, and, from
# a connection closed while read (redis-py 8 with hiredis), a ValueError, a RuntimeError or
# a TypeError (its parser polls a socket that is gone). Client.close() does that to a
# caller still waiting: closing the store closes every connection of its pools, the
# subscription its leader reads included (the one cross-thread close found)
READ_ERRORS = (redis.RedisError, OSError, ValueError, RuntimeError, TypeError)


class Awaited(Generic[W]):
    """Who waits for which job's outcome, and the outcomes that came before anyone waited
    for them (kept briefly, up to ORPHAN_CACHE_SIZE): the bookkeeping both listeners share.
    Not thread-safe by itself: `Listener` holds its lock around it."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[W]] = {}
        self._orphans: OrderedDict[str, Outcome] = OrderedDict()

    def add(self, job_id: str, waiter: W) -> Outcome | None:
        """Register WAITER for JOB_ID, or return the outcome that came before it."""
        orphan = self._orphans.pop(job_id, None)
        if orphan is None:
            self._waiters.setdefault(job_id, []).append(waiter)
        return orphan

    def remove(self, job_id: str, waiter: W) -> None:
        waiters = self._waiters.get(job_id)
        if waiters and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[job_id]

    def take(self, outcome: Outcome) -> list[W]:
        """The waiters of OUTCOME's job, no longer registered; none: it is kept for one
        that registers later."""
        waiters = self._waiters.pop(outcome.job_id, None)
        if waiters is None:
            self._orphans[outcome.job_id] = outcome
            while len(self._orphans) > ORPHAN_CACHE_SIZE:
                self._orphans.popitem(last=False)
            return []
        return waiters

    def job_ids(self) -> list[str]:
        return list(self._waiters)


class Waiter:
    """A caller waiting in `Listener.wait`, registered as its job's callback: `wake` is
    set when its outcome arrives or when it is handed the leader role (``promoted``)."""

    __slots__ = ("outcome", "promoted", "wake")

    def __init__(self) -> None:
        self.outcome: Outcome | None = None
        self.promoted = False  # changed under the listener's lock only
        self.wake = threading.Event()

    def __call__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.wake.set()


class Listener:
    """The reply channels of a client process's threads, one per queue, each read by
    whichever of its callers leads (module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.cid = uuid.uuid4().hex
        self._lock = threading.Lock()  # the awaited jobs, the channels, who leads each
        self._awaited: Awaited[Callback] = Awaited()
        self._channels: dict[str, _ReplyChannel] = {}
        self._closed = False

    def subscribe(self, queue: str) -> None:
        """Subscribe to QUEUE's reply channel (confirmed), once; raises while Redis does
        not answer (callers retry it as they retry their enqueue)."""
        with self._lock:
            if queue in self._channels:
                return
        channel = _ReplyChannel(self, queue)  # subscribes, outside the lock
        with self._lock:
            if queue not in self._channels and not self._closed:
                self._channels[queue] = channel
                return
        channel.close()

    def register(self, job_id: str, callback: Callback) -> None:
        with self._lock:
            orphan = self._awaited.add(job_id, callback)
        if orphan is not None:
            callback(orphan)

    def unregister(self, job_id: str, callback: Callback) -> None:
        with self._lock:
            self._awaited.remove(job_id, callback)

    def deliver(self, outcome: Outcome) -> None:
        with self._lock:
            callbacks = self._awaited.take(outcome)
        for callback in callbacks:
            callback(outcome)

    def wait(self, waiter: Waiter, job_id: str, timeout_s: float) -> Outcome | None:
        """WAITER's outcome (of JOB_ID, whose queue's channel it reads), once it arrives
        within TIMEOUT_S (None if it does not); the calling thread reads the channel for
        everybody while it leads."""
        with self._lock:
            channel = self._channels.get(queue_of_job(job_id))
        if channel is None:  # never subscribed (a caller that did not call subscribe)
            waiter.wake.wait(timeout_s)
            return waiter.outcome
        return channel.wait(waiter, timeout_s)

    def close(self) -> None:
        """Stop reading; a thread leading now closes its connection as it leaves."""
        with self._lock:
            self._closed = True
            channels = list(self._channels.values())
        for channel in channels:
            channel.close()

    def recheck(self) -> None:
        """Ask Redis for the outcome of every awaited job (after a gap in the stream)."""
        with self._lock:
            pending = self._awaited.job_ids()
        for job_id in pending:
            try:
                got = self.store.attach(job_id, self.cid)
            except redis.RedisError:
                return
            if isinstance(got, Outcome):
                self.deliver(got)


class _ReplyChannel:
    """One queue's reply channel of a `Listener`, read by whichever caller leads; it
    subscribes, confirmed, when made. Its leader state is guarded by the listener's lock."""

    def __init__(self, listener: Listener, queue: str) -> None:
        self.listener, self.queue = listener, queue
        self.name = listener.store.keys.reply_channel(queue, listener.cid)
        self._leading = False  # a thread holds the leader role, or has been handed it
        self._followers: dict[Waiter, None] = {}  # waiting, not leading; in arrival order
        self._closed = False
        # the leader's alone: the connection (None: lost), and when to try again
        self._pubsub: redis.client.PubSub | None = self._subscribe()
        self._backoff_s = BACKOFF_MIN_S
        self._retry_at = 0.0

    def _subscribe(self) -> redis.client.PubSub:
        pubsub: redis.client.PubSub = self.listener.store.subscribe_replies(
            self.queue, self.listener.cid)
        return pubsub

    def wait(self, waiter: Waiter, timeout_s: float) -> Outcome | None:
        deadline = time.monotonic() + timeout_s
        lock = self.listener._lock
        with lock:
            if waiter.outcome is not None:
                return waiter.outcome
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                self._followers[waiter] = None
        if not lead:
            waiter.wake.wait(max(0.0, deadline - time.monotonic()))
            with lock:
                self._followers.pop(waiter, None)
                lead, waiter.promoted = waiter.promoted, False
            if lead:
                waiter.wake.clear()  # it only meant "lead"; an outcome is checked next
        if lead:
            try:
                self._lead(waiter, deadline)
            finally:
                self._hand_over()
        return waiter.outcome

    def _lead(self, waiter: Waiter, deadline: float) -> None:
        while waiter.outcome is None and not self._closed:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                return
            if self._pubsub is None:
                self._resubscribe(waiter, left_s)
                continue
            try:
                message = self._pubsub.get_message(timeout=min(LISTEN_SLICE_S, left_s))
            except READ_ERRORS as exc:
                self._drop(exc)
                continue
            self._backoff_s = BACKOFF_MIN_S
            kind = message.get("type") if message else None
            if kind == "smessage":
                self._handle(message["data"])
            elif kind == "sunsubscribe":  # the cluster moved the queue's slot
                self._drop(redis.ConnectionError(f"{self.name} moved to another node"))
            elif message is None and not self.listener.store.subscription_current(self._pubsub):
                self._drop(redis.ConnectionError("the Sentinels named another master"))

    def _hand_over(self) -> None:
        """Leave the leader role: to the follower that came last, or to nobody."""
        with self.listener._lock:
            if self._closed:  # keep the role for good: nobody reads a closed channel
                pubsub, self._pubsub = self._pubsub, None
            elif self._followers:
                pubsub = None
                follower = next(reversed(self._followers))
                del self._followers[follower]
                follower.promoted = True
                follower.wake.set()
            else:
                pubsub = None
                self._leading = False
        if pubsub is not None:
            _close_quietly(pubsub)

    def _handle(self, data: bytes | str) -> None:
        outcome = outcome_of(self.name, data)
        if outcome is not None:
            self.listener.deliver(outcome)

    def _drop(self, exc: Exception) -> None:
        """The connection failed: close it and schedule a resubscribe after the backoff."""
        if not self._closed:
            log.warning("result listener lost Redis (%s); reconnecting", reason(exc))
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            _close_quietly(pubsub)
        self._back_off()

    def _back_off(self) -> None:
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, BACKOFF_MAX_S)

    def _resubscribe(self, waiter: Waiter, left_s: float) -> None:
        pause_s = self._retry_at - time.monotonic()
        if pause_s > 0:
            waiter.wake.wait(min(pause_s, left_s))  # ends early if its outcome comes
            return
        try:
            self._pubsub = self._subscribe()
        except (redis.RedisError, OSError) as exc:
            log.warning("result listener could not resubscribe yet: %s", reason(exc))
            self._back_off()
            return
        self.listener.recheck()

    def close(self) -> None:
        """Stop reading; a thread leading now closes the connection as it leaves."""
        with self.listener._lock:
            self._closed = True
            if self._leading:
                return
            self._leading = True  # for good: nobody reads a closed channel
            pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            _close_quietly(pubsub)


def outcome_of(channel: str, data: bytes | str) -> Outcome | None:
    """The outcome a reply message carries; None (logged) for a malformed one: published
    by hand, not by the finish script, and whoever reads for every waiter must not fail
    them for it."""
    try:
        outcome = Outcome.from_reply(data)
    except ValueError:
        log.error("ignored a malformed message on %s: %r", channel, data[:200])
        return None
    if outcome.status == PROGRESS:  # not an outcome: a running job's progress report
        PROGRESS_WATCHERS.notify(outcome.job_id, outcome.body)
        return None
    return outcome


def _close_quietly(pubsub: redis.client.PubSub) -> None:
    try:
        pubsub.close()
    except (redis.RedisError, OSError):
        pass
