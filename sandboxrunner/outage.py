"""One log line per Redis outage and per kind of thread, instead of one per retry.

A supervisor's threads retry Redis with backoff while it is down; each kind (fetch,
settle, heartbeat) says it lost Redis once, with the first error, and says when Redis is
back, with how long the outage lasted.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class OutageLog:
    """The outage state of one kind of thread (several threads may share it)."""

    def __init__(self, what: str) -> None:
        self.what = what  # "fetching jobs", "writing outcomes", ...
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
        """A call went through: after an outage, say that Redis is back."""
        if self._down_since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            log.warning("%s: Redis is back after %.1f s", self.what, time.monotonic() - since)
