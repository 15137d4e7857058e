"""``ctx.progress(fraction, message=None)``: how far a running job got, coalesced.

A handler may report progress in a tight loop; Redis must not pay for each call. Every
report goes into a `ProgressBuffer`, which keeps the latest report of each job and hands
them on from one daemon thread, at most once every PROGRESS_INTERVAL_S (so a job costs
Redis at most about 10 writes a second, however often it reports)::

  thread mode:   ctx.progress -> RedisProgressSink (buffer) -> progress.lua, per queue
  process mode:  ctx.progress -> PipeProgressSink in the child (buffer) -> PROGRESS frame
                 -> the pool -> the supervisor's RedisProgressSink (buffer) -> progress.lua

progress.lua stores the report in the job record's ``progress`` field (JSON) while the job
is active on that supervisor, and publishes it on each waiting caller's reply channel
(``ID \\n progress \\n JSON``), where the listeners hand it to the caller's
``on_progress`` (job_control.py). The supervisor also keeps each running job's latest
report for its snapshot, so `top` draws a bar per running job.

A job's last report reaches Redis before its outcome: a child sends it before its DONE
frame, and the supervisor writes a report still waiting in its buffer before it reports
the job's outcome (`RedisProgressSink.ended`), so a job that ends with
``ctx.progress(1.0)`` has it on its record. A report that comes after the job settled is
dropped by the script.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from .errors import InvalidProgress
from .outage import OutageLog

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.1  # a buffer writes at most this often: ~10 writes/s
MAX_MESSAGE_CHARS = 200  # a progress message is a status line, not a log
TAKE_WAIT_S = 1.0  # a job's outcome waits at most this for its last report's write


@dataclass(frozen=True)
class ProgressReport:
    """One ``ctx.progress`` call of job JOB_ID of QUEUE."""

    job_id: str
    queue: str
    fraction: float
    message: str | None = None

    def to_json(self) -> str:
        return json.dumps({"fraction": self.fraction, "message": self.message})


def checked_report(job_id: str, queue: str, fraction: Any, message: Any) -> ProgressReport:
    """The report of ``ctx.progress(FRACTION, MESSAGE)``; InvalidProgress (nothing recorded)
    for a fraction that is not a number from 0 to 1 or a message that is not text."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not math.isfinite(fraction) or not 0 <= fraction <= 1:
        raise InvalidProgress(
            f"ctx.progress of job {job_id}: fraction must be a number from 0 to 1 "
            f"(0.25 is a quarter done), got {fraction!r}; nothing was recorded")
    if message is not None and not isinstance(message, str):
        raise InvalidProgress(
            f"ctx.progress of job {job_id}: message must be text or None, got "
            f"{type(message).__name__}; nothing was recorded")
    if message is not None and len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS - 1] + "…"
    return ProgressReport(job_id, queue, float(fraction), message)


def report_from_json(job_id: str, queue: str, text: str) -> ProgressReport | None:
    """The report a PROGRESS frame or a reply message carries; None when malformed."""
    try:
        raw = json.loads(text)
        return checked_report(job_id, queue, raw["fraction"], raw.get("message"))
    except (ValueError, TypeError, KeyError, InvalidProgress):
        return None


class ProgressBuffer:
    """The latest report of each job, handed to WRITE by one daemon thread (started on the
    first report, so a forked child starts its own) at most every PROGRESS_INTERVAL_S."""

    def __init__(self, write: Callable[[list[ProgressReport]], None], name: str) -> None:
        self._write, self._name = write, name
        self._latest: dict[str, ProgressReport] = {}
        self._writing: set[str] = set()  # jobs whose report a flush is writing now
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def offer(self, report: ProgressReport) -> None:
        with self._cond:
            self._latest[report.job_id] = report
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name,
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def take(self, job_id: str) -> ProgressReport | None:
        """JOB_ID's report waiting to be written, no longer waiting (None: none waits);
        once a flush writing one of its reports is done (up to TAKE_WAIT_S)."""
        if self._thread is None:  # no job ever reported: the plain path takes no lock
            return None
        with self._cond:
            self._cond.wait_for(lambda: job_id not in self._writing, TAKE_WAIT_S)
            return self._latest.pop(job_id, None)

    def flush(self) -> None:
        """Write what waits now, on the calling thread."""
        if self._thread is None:  # no job ever reported: the plain path takes no lock
            return
        with self._cond:
            batch, self._latest = list(self._latest.values()), {}
            self._writing = {report.job_id for report in batch}
        try:
            if batch:
                self._write(batch)
        finally:
            with self._cond:
                self._writing = set()
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._latest and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - progress is best effort; the job goes on
                log.exception("could not hand on job progress")
            with self._cond:  # at most one write per interval, however often jobs report
                self._cond.wait_for(lambda: self._closed, PROGRESS_INTERVAL_S)


class RedisProgressSink:
    """A supervisor's progress reports on their way to Redis (progress.lua), and the
    latest report of each running job, for its snapshot (`top`)."""

    def __init__(self, store: Store, sid: str, outage: OutageLog) -> None:
        self._store, self._sid = store, sid
        self._buffer = ProgressBuffer(self._write, "sr-progress")
        self._seen: dict[str, ProgressReport] = {}
        self._outage = outage

    def progress(self, report: ProgressReport) -> None:
        self._seen[report.job_id] = report
        self._buffer.offer(report)

    def ended(self, job_id: str) -> None:
        """JOB_ID ended and its outcome is about to be written: its last report, if one
        still waits, is written first, on this thread (the script drops it once the job
        has settled). Nothing to do for a job with no report waiting: the usual case."""
        report = self._buffer.take(job_id)
        if report is not None:
            self._write([report])

    def latest(self, job_id: str) -> ProgressReport | None:
        return self._seen.get(job_id)

    def keep_only(self, running: set[str]) -> None:
        """Forget the reports of jobs that no longer run (bounds the map)."""
        for job_id in [i for i in self._seen if i not in running]:
            self._seen.pop(job_id, None)

    def close(self) -> None:
        self._buffer.close()

    def _write(self, batch: list[ProgressReport]) -> None:
        by_queue: dict[str, list[ProgressReport]] = {}
        for report in batch:
            by_queue.setdefault(report.queue, []).append(report)
        try:
            for queue, reports in by_queue.items():
                self._store.record_progress(queue, self._sid, reports)
            self._outage.succeeded()
        except redis.RedisError as exc:  # dropped: the next report says more anyway
            self._outage.failed(exc, PROGRESS_INTERVAL_S)
