"""One pub/sub listener per client process: wakes every caller waiting for a result.

Each client process has a client id (CID) and subscribes once to ``PREFIX:reply:CID``.
A job records the CIDs of its waiting callers; the finish script publishes the outcome to
each. Many concurrent callers (threads or asyncio tasks) therefore share one connection
and nothing polls.

Pub/sub drops messages while disconnected, so the listener confirms its subscription
before anyone enqueues, and after a reconnect it asks Redis for the outcome of every job
still awaited (``attach``). A message that arrives before its waiter registered (a
singleton caller attached to another caller's job) is kept briefly in a bounded cache.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable

import redis

from .job import Outcome
from .store import Store

log = logging.getLogger(__name__)

Callback = Callable[[Outcome], None]
ORPHAN_CACHE_SIZE = 10_000
SUBSCRIBE_TIMEOUT_S = 5.0


class Listener:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.cid = uuid.uuid4().hex
        self.channel = store.keys.reply_channel(self.cid)
        self._lock = threading.Lock()
        self._waiters: dict[str, list[Callback]] = {}
        self._orphans: OrderedDict[str, Outcome] = OrderedDict()
        self._stop = threading.Event()
        self._pubsub = self._subscribe()
        self._thread = threading.Thread(target=self._loop, name="sr-listener", daemon=True)
        self._thread.start()

    def _subscribe(self) -> redis.client.PubSub:
        pubsub: redis.client.PubSub = self.store.redis.pubsub()  # type: ignore[no-untyped-call]
        pubsub.subscribe(self.channel)
        # wait for the confirmation: a result published before it would be lost
        message = pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
        while message is not None and message.get("type") != "subscribe":
            message = pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
        if message is None:
            pubsub.close()
            raise redis.ConnectionError(f"no confirmation of SUBSCRIBE {self.channel}")
        return pubsub

    def register(self, job_id: str, callback: Callback) -> None:
        with self._lock:
            orphan = self._orphans.pop(job_id, None)
            if orphan is None:
                self._waiters.setdefault(job_id, []).append(callback)
                return
        callback(orphan)

    def unregister(self, job_id: str, callback: Callback) -> None:
        with self._lock:
            callbacks = self._waiters.get(job_id)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._waiters[job_id]

    def deliver(self, outcome: Outcome) -> None:
        with self._lock:
            callbacks = self._waiters.pop(outcome.job_id, None)
            if callbacks is None:
                self._orphans[outcome.job_id] = outcome
                while len(self._orphans) > ORPHAN_CACHE_SIZE:
                    self._orphans.popitem(last=False)
                return
        for callback in callbacks:
            callback(outcome)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        try:
            self._pubsub.close()
        except redis.RedisError:
            pass

    def _loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                backoff = 0.05
            except (redis.RedisError, OSError, ValueError, RuntimeError) as exc:
                if self._stop.is_set():
                    return
                log.warning("result listener lost Redis (%s); reconnecting", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                self._reconnect()
                continue
            if message is not None and message.get("type") == "message":
                try:
                    outcome = Outcome.from_reply(message["data"])
                except ValueError:
                    # published by hand, not by the finish script: this thread serves
                    # every waiter of the process and must not die of it
                    log.error("ignored a malformed message on %s: %r", self.channel,
                              message["data"][:200])
                    continue
                self.deliver(outcome)

    def _reconnect(self) -> None:
        try:
            self._pubsub.close()
        except (redis.RedisError, OSError):
            pass
        try:
            self._pubsub = self._subscribe()
        except (redis.RedisError, OSError) as exc:
            log.warning("result listener could not resubscribe yet: %s", exc)
            return
        self.recheck()

    def recheck(self) -> None:
        """Ask Redis for the outcome of every awaited job (after a gap in the stream)."""
        with self._lock:
            pending = list(self._waiters)
        for job_id in pending:
            try:
                got = self.store.attach(job_id, self.cid)
            except redis.RedisError:
                return
            if isinstance(got, Outcome):
                self.deliver(got)
