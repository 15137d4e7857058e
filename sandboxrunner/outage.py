"""A supervisor's threads while Redis is down: one log line per outage and per kind of
thread, instead of one per retry, and backoff pauses that end once Redis is back.

A supervisor's threads retry Redis with backoff while it is down; each kind (fetch,
settle, heartbeat) says it lost Redis once, with the first error, and says when Redis is
back, with how long the outage lasted.

Each kind backs off on a schedule of its own: the heartbeat tries every heartbeat_ms, while
fetching and settling double their pause after each failure, up to 2 s. When one kind
finds Redis back, every pause of the others ends (`Outages`), so the whole supervisor
resumes with the first thread that gets through. Without that, after a failover the
heartbeat would be back while fetching slept on for up to 2 s, and callers (who retry at
least once a second) would fill the queue meanwhile: measured in a Sentinel failover
mid-traffic (tests/faults/test_sentinel_failover.py), a caller enqueueing without waiting
put 3,500 jobs before the fetch thread woke, and every run_job after the failover waited
2.5 s behind them.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Outages:
    """The outage logs of one supervisor's threads, and the backoff pauses they take: when
    Redis answers one of them after an outage, every pause ends (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pausing: set[threading.Event] = set()
        self._logs: list[OutageLog] = []

    def log(self, what: str) -> OutageLog:
        """The outage log of one kind of thread, WHAT it does ("fetching jobs")."""
        outage = OutageLog(what, self)
        self._logs.append(outage)
        return outage

    def pause(self, seconds: float, wake: threading.Event) -> None:
        """Back off for SECONDS, less once Redis answers another thread or WAKE is set
        (by its owner, for a reason of its own: a stop); WAKE is clear on return."""
        with self._lock:
            self._pausing.add(wake)
        try:
            wake.wait(seconds)
        finally:
            with self._lock:
                self._pausing.discard(wake)
            wake.clear()

    def back(self) -> None:
        """Redis answered a thread after an outage: end every pause."""
        with self._lock:
            pausing = list(self._pausing)
        for wake in pausing:
            wake.set()

    def silence(self) -> None:
        """Log nothing more (see `OutageLog.silence`)."""
        for outage in self._logs:
            outage.silence()


class OutageLog:
    """The outage state of one kind of thread (several threads may share it)."""

    def __init__(self, what: str, outages: Outages) -> None:
        self.what = what  # "fetching jobs", "writing outcomes", ...
        self.outages = outages
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._silenced = False

    def silence(self) -> None:
        """Log nothing more: the supervisor stopped, and a thread it gave up on (blocked
        on Redis) fails once its connection is closed."""
        self._silenced = True

    def failed(self, exc: BaseException, retry_s: float) -> None:
        """A call failed: the first failure of an outage is logged, the rest are not."""
        with self._lock:
            if self._down_since is not None or self._silenced:
                return
            self._down_since = time.monotonic()
        log.warning("%s: Redis failed (%s); retrying with backoff (next in %.2f s) until "
                    "it answers", self.what, exc, retry_s)

    def succeeded(self) -> None:
        """A call went through: after an outage, say that Redis is back, and end the
        backoff pauses of the other threads."""
        if self._down_since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            self.outages.back()
            log.warning("%s: Redis is back after %.1f s", self.what, time.monotonic() - since)

    def pause(self, seconds: float, wake: threading.Event) -> None:
        """Back off after a failure (`Outages.pause`)."""
        self.outages.pause(seconds, wake)
