"""One snapshot read per interval, shared by every request and tab of a dashboard process.

`SharedSnapshot.get()` returns the last `Snapshot` while it is younger than the interval
(``refresh_s``); the first caller after that reads a new one while the others wait for it
on a lock, then take the same one: ten tabs polling once a second cost Redis what one tab
does. A failed read (Redis down) is shared the same way: the error is kept for the
interval and raised to each caller, so an outage does not turn every poll into a connect
attempt. Requests reach it from Starlette's thread pool (the reads are blocking redis-py
calls), under ASGI and WSGI alike, so a `threading.Lock` is what makes it task-safe too.

Cost of a read (snapshot.py has the rounds): on one server, at most seven round trips
and about 30 commands however many jobs exist (TIME, INFO, two pipelines, each queue's
cron hash and the status of each schedule's last run), plus 2 commands per supervisor and
2 per queue it serves. A page load that finds a fresh snapshot costs none.

It also keeps, in this process's memory, the completions seen over the last
HISTORY_S seconds (one point per read), so the overview can chart jobs/s over minutes
while Redis keeps only the last one (the ``rate`` hash, 60 s).

`SharedReading` shares any other reading the same way: ``/metrics`` reads the job duration
histograms (one round trip per server) at most once per interval, so however often
Prometheus and the JSON twin are scraped, Redis sees one snapshot and one durations read
per interval.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from ..errors import SandboxRunnerError
from ..snapshot import Snapshot

T = TypeVar("T")
HISTORY_S = 600  # the overview's chart: jobs/s over the last ten minutes
CHART_BUCKET_S = 10


class SharedReading(Generic[T]):
    """The last value READ returned, renewed at most once per INTERVAL_S whoever asks; a
    failed read's error (ours: RedisUnavailable, RedisRefused) is kept for the interval
    too and raised to each caller."""

    def __init__(self, read: Callable[[], T], interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read, self._interval_s, self._clock = read, interval_s, clock
        self._lock = threading.Lock()
        self._taken_at = -float("inf")
        self._value: T | None = None
        self._error: SandboxRunnerError | None = None
        self.reads = 0  # how many times Redis was read (tests and the page footer)

    def get(self) -> T:
        with self._lock:
            if self._clock() - self._taken_at >= self._interval_s:
                self.reads += 1
                try:
                    self._value, self._error = self._read(), None
                except SandboxRunnerError as exc:  # Redis trouble (read translates it)
                    self._error = exc
                self._taken_at = self._clock()
            if self._error is not None:
                raise self._error
            assert self._value is not None
            return self._value

    def invalidate(self) -> None:
        """The next `get` reads afresh."""
        with self._lock:
            self._taken_at = -float("inf")


class SharedSnapshot:
    """The latest snapshot of READ (a `SnapshotReader.read`), shared as a `SharedReading`,
    and the completions each read saw (the overview's chart)."""

    def __init__(self, read: Callable[[], Snapshot], interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._shared = SharedReading(self._read_and_note, interval_s, clock)
        self._history_lock = threading.Lock()
        self._history: deque[tuple[int, int]] = deque()  # (server ms, settled so far)

    @property
    def reads(self) -> int:
        return self._shared.reads

    def get(self) -> Snapshot:
        """The shared snapshot (read now if the last is older than the interval); our
        error if the last read failed."""
        return self._shared.get()

    def invalidate(self) -> None:
        """The next `get` reads afresh: an action changed what the last one shows."""
        self._shared.invalidate()

    def _read_and_note(self) -> Snapshot:
        snapshot = self._read()
        totals = snapshot.totals()
        oldest_ms = snapshot.server_time_ms - HISTORY_S * 1000
        with self._history_lock:
            self._history.append((snapshot.server_time_ms,
                                  totals["completed"] + totals["failed"]))
            while self._history and self._history[0][0] < oldest_ms:
                self._history.popleft()
        return snapshot

    def jobs_per_s_history(self) -> list[tuple[int, float]]:
        """(bucket start ms, jobs/s settled) per CHART_BUCKET_S over what this process saw
        in the last HISTORY_S seconds, oldest first; a gap (no reads) shows as nothing."""
        with self._history_lock:
            points = list(self._history)
        buckets: dict[int, tuple[int, int]] = {}  # start ms -> (settled, ms covered)
        for (t0, n0), (t1, n1) in zip(points, points[1:], strict=False):
            if n1 < n0 or t1 <= t0:
                continue  # counters reset (a flushed Redis) or clock went back
            start = t1 - t1 % (CHART_BUCKET_S * 1000)
            done, span = buckets.get(start, (0, 0))
            buckets[start] = (done + n1 - n0, span + t1 - t0)
        return [(start, done * 1000 / span) for start, (done, span) in sorted(buckets.items())]
