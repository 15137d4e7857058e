"""Writing a supervisor's job outcomes to Redis: the settle thread, and what a stop leaves.

Executors report each job's outcome (a `Settlement`). A lone outcome is written by the
reporting thread itself (a hand-over to the settle thread costs its caller more than the
write); otherwise the settle thread writes them in batches, one finish script per queue
per batch, which also notifies the callers. While Redis does not answer, outcomes wait in
memory and the settle thread retries with backoff; their jobs stay in the supervisor's
lease meanwhile, so none runs elsewhere.

A stop gives the writes a deadline (`write_until`), whatever Redis answers: past it the
settle thread stops trying, and `unwritten` lists the outcomes it could not write, for the
stop to log with their job ids. Nothing is lost: those jobs are still in the supervisor's
lease, and once it lapses (or a hand-back gives them back) another supervisor runs them.
"""

from __future__ import annotations

import logging
import math
import queue as queue_mod
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import redis

from .job import Settlement
from .joblog import RedisLogSink
from .outage import Outages
from .store import Store

log = logging.getLogger(__name__)

BATCH_MAX = 500
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0


class Settler:
    """The outcomes of one supervisor on their way to Redis (see the module doc)."""

    def __init__(self, store: Store, sid: str, log_sink: RedisLogSink,
                 on_written: Callable[[str, list[str]], None], outages: Outages) -> None:
        """ON_WRITTEN(queue, ids): those outcomes left the lease (the fetcher forgets them).
        OUTAGES: the supervisor's, whose threads end each other's backoff pauses."""
        self._store, self._sid, self._log_sink = store, sid, log_sink
        self._on_written = on_written
        self._queue: queue_mod.SimpleQueue[tuple[str, Settlement] | None] = (
            queue_mod.SimpleQueue())
        self._lock = threading.Lock()  # held by whoever writes outcomes
        self.outage = outages.log("writing job outcomes")
        # outcomes reported and not written yet, per queue (dicts keep the report order)
        self._pending: dict[str, dict[str, None]] = defaultdict(dict)
        self._pending_lock = threading.Lock()
        self._due_at = math.inf  # monotonic time past which writes are given up (a stop)
        self._wake = threading.Event()  # ends a pause: the deadline moved, or Redis is back

    # -- reporting -------------------------------------------------------------------
    def report(self, queue: str, outcome: Settlement, alone: bool) -> None:
        """Write OUTCOME of QUEUE: at once on this thread when it is ALONE (no other job
        in hand) and nobody else writes, else through the settle thread."""
        self._note(queue, outcome.job_id)
        if alone and self._queue.empty() and self._lock.acquire(blocking=False):
            try:
                if self._write_once(queue, outcome):
                    return
            finally:
                self._lock.release()
        self._queue.put((queue, outcome))

    def put(self, queue: str, outcome: Settlement) -> None:
        """Hand OUTCOME to the settle thread."""
        self._note(queue, outcome.job_id)
        self._queue.put((queue, outcome))

    def close(self) -> None:
        """No more outcomes: the settle thread ends once it wrote or gave up on the rest."""
        self._queue.put(None)

    def write_until(self, deadline: float) -> None:
        """Give up writing at DEADLINE (monotonic), or earlier if given before."""
        self._due_at = min(self._due_at, deadline)
        self._wake.set()

    @property
    def due_at(self) -> float:
        """When writes are given up (monotonic; inf until a stop)."""
        return self._due_at

    def unwritten(self) -> dict[str, list[str]]:
        """The ids of the outcomes not written yet, per queue."""
        with self._pending_lock:
            return {q: list(ids) for q, ids in self._pending.items() if ids}

    def _note(self, queue: str, job_id: str) -> None:
        with self._pending_lock:
            self._pending[queue][job_id] = None

    # -- writing ---------------------------------------------------------------------
    def loop(self) -> None:
        """The settle thread: write what is reported, in batches, until `close`."""
        done = False
        while not done:
            batch, done = self._next_batch()
            try:
                with self._lock:
                    self._write_batch(batch)
            except Exception:  # noqa: BLE001 - a bug here must not stop all settling
                log.exception("could not settle a batch of %d job(s)",
                              sum(len(v) for v in batch.values()))

    def _next_batch(self) -> tuple[dict[str, list[Settlement]], bool]:
        """The outcomes waiting (up to BATCH_MAX), by queue, and whether `close` came."""
        item = self._queue.get()
        batch: dict[str, list[Settlement]] = defaultdict(list)
        while item is not None:
            batch[item[0]].append(item[1])
            if sum(len(v) for v in batch.values()) >= BATCH_MAX:
                break
            try:
                item = self._queue.get_nowait()
            except queue_mod.Empty:
                break
        return batch, item is None

    def _write_once(self, queue: str, outcome: Settlement) -> bool:
        """Write one outcome without retrying; False: it is for the settle thread."""
        try:
            self._finish(queue, [outcome])
        except Exception:  # noqa: BLE001 - the settle thread retries (Redis down) or logs
            return False
        return True

    def _write_batch(self, batch: dict[str, list[Settlement]]) -> None:
        """Write BATCH, retrying while Redis fails, until written or past the deadline
        (the outcomes left stay pending: `unwritten`)."""
        backoff_s = BACKOFF_MIN_S
        for queue, outcomes in batch.items():
            while time.monotonic() < self._due_at:
                try:
                    self._finish(queue, outcomes)
                    self.outage.succeeded()
                    break
                except redis.RedisError as exc:
                    # the lease keeps the jobs from being run elsewhere meanwhile
                    self.outage.failed(exc, backoff_s)
                    self._pause(backoff_s)
                    backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)

    def _pause(self, seconds: float) -> None:
        """Sleep SECONDS, less when the deadline comes sooner or is moved, or when Redis
        answers another thread of the supervisor (outage.Outages)."""
        left_s = self._due_at - time.monotonic()
        self.outage.pause(max(0.0, min(seconds, left_s)), self._wake)

    def _finish(self, queue: str, outcomes: list[Settlement]) -> None:
        ids = [o.job_id for o in outcomes]
        self._store.finish(queue, self._sid, outcomes, self._log_sink.logged(ids))
        with self._pending_lock:
            pending = self._pending[queue]
            for job_id in ids:
                pending.pop(job_id, None)
        # only now, once they left the lease: a fetcher's reconcile reads the held ids first
        self._on_written(queue, ids)
        for job_id in ids:
            self._log_sink.forget(job_id)
