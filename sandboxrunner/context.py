"""What a running handler gets as ``ctx``, and which job the current code runs in.

``ctx.job`` is the `JobRecord`; ``ctx.log(msg, data=None, err=None)`` and its ``warn`` and
``error`` variants record log lines of that job through a `LogSink` (straight to Redis in
thread mode, over the pipe to the supervisor in a child process);
``ctx.progress(fraction, message=None)`` reports how far it got through a `ProgressSink`
(coalesced: see progress.py); ``ctx.cancelled`` is a `threading.Event` set when the job is
cancelled while it runs on a thread (job_control.py). ``current_job`` says
which job the running code belongs to: it is set around the handler, so it follows the
job's thread or asyncio task (a nested run_job and thread mode's print capture,
joboutput.py, read it).
"""

from __future__ import annotations

import contextvars
import mmap
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol

from .job import JobRecord
from .progress import ProgressReport, checked_report


class LogSink(Protocol):
    def emit(self, job_id: str, queue: str, line: dict[str, Any]) -> None: ...


class ProgressSink(Protocol):
    def progress(self, report: ProgressReport) -> None: ...


def log_line(level: str, message: Any, data: Any = None, err: BaseException | None = None,
             source: str = "log") -> dict[str, Any]:
    """One log line as stored: level, message, time, optional data and error."""
    line: dict[str, Any] = {"ts": time.time(), "level": level, "msg": str(message)}
    if data is not None:
        line["data"] = data
    if err is not None:
        line["err"] = {
            "type": type(err).__name__,
            "message": str(err),
            "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
        }
    if source != "log":
        line["source"] = source
    return line


class JobLogger:
    """``ctx.log``: call it for info lines; ``.warn`` and ``.error`` for the other levels."""

    def __init__(self, sink: LogSink, job_id: str, queue: str) -> None:
        self._sink, self._job_id, self._queue = sink, job_id, queue

    def __call__(self, message: Any, data: Any = None, err: BaseException | None = None) -> None:
        self._sink.emit(self._job_id, self._queue, log_line("info", message, data, err))

    def info(self, message: Any, data: Any = None, err: BaseException | None = None) -> None:
        self(message, data, err)

    def warn(self, message: Any, data: Any = None, err: BaseException | None = None) -> None:
        self._sink.emit(self._job_id, self._queue, log_line("warn", message, data, err))

    warning = warn

    def error(self, message: Any, data: Any = None, err: BaseException | None = None) -> None:
        self._sink.emit(self._job_id, self._queue, log_line("error", message, data, err))


class PoolSlots:
    """A process pool's slots as a nested run_job in one of its children sees them.

    Each child owns one counter of its pool's share of `SlotCounters`: how many nested
    run_job calls it is waiting on. The sum is how many of the pool's children wait that
    way. One writer per counter, so no lock (a killed child cannot leave a lock held); the
    pool zeroes a dead child's counter.
    """

    def __init__(self, queue: str, capacity: int, counters: Any, index: int) -> None:
        self.queue, self.capacity = queue, capacity
        self._counters, self._index = counters, index

    def waiting_nested(self) -> int:
        return sum(self._counters)

    def enter_nested(self) -> None:
        self._counters[self._index] += 1

    def leave_nested(self) -> None:
        self._counters[self._index] -= 1


class SlotCounters:
    """The nested-call counters of every process pool of a supervisor, in one memfd made
    before its fork server starts: the fork server maps the same memory (inherited when
    forked, by the fd when spawned), so its children count where the supervisor's pools
    zero a dead child's counter. Each pool gets twice its size plus two, since a dying
    child keeps its counter until it is reaped."""

    def __init__(self, capacities: dict[str, int], fd: int = -1) -> None:
        self.capacities = dict(capacities)
        lengths = {q: 2 * size + 2 for q, size in capacities.items()}
        size_bytes = 4 * sum(lengths.values())
        if fd < 0:
            fd = os.memfd_create("sandboxrunner-pool-slots")
            os.ftruncate(fd, size_bytes)
        self.fd = fd
        view = memoryview(mmap.mmap(fd, size_bytes)).cast("i")
        self._views: dict[str, memoryview] = {}
        start = 0
        for queue, length in lengths.items():
            self._views[queue] = view[start:start + length]
            start += length

    def of(self, queue: str) -> memoryview:
        """QUEUE's counters: an int per slot, shared with the children."""
        return self._views[queue]

    def close(self) -> None:
        os.close(self.fd)  # the mapping stays while a view of it lives


_CANCELLED_MADE = threading.Lock()


@dataclass
class JobContext:
    job: JobRecord
    log: JobLogger
    # set by the supervisor that runs the job; lets run_job spot a nested call that would
    # wait for a slot its own caller holds
    slots: Any = field(default=None, repr=False)
    # thread mode: where the job's prints go (joboutput.JobOutput); a child has its own
    output: Any = field(default=None, repr=False)
    # the factory of the client a nested run_job uses, handed in by whoever started the
    # worker side (the worker side never imports the client itself)
    make_client: Any = field(default=None, repr=False)
    # where ctx.progress reports go (None: nowhere, e.g. a context built by hand)
    progress_sink: ProgressSink | None = field(default=None, repr=False)
    # ctx.cancelled's event, made on first use: a job that never looks at it (and every
    # job in a child, which is killed instead) does not pay for an Event and its lock
    _cancelled: threading.Event | None = field(default=None, repr=False, init=False)

    @property
    def cancelled(self) -> threading.Event:
        """Set when the job is cancelled while it runs in a thread (a thread cannot be
        stopped: the handler may check it or wait on it); a child is killed instead."""
        if self._cancelled is None:
            with _CANCELLED_MADE:  # the handler and a cancel may ask for it at once
                if self._cancelled is None:
                    self._cancelled = threading.Event()
        return self._cancelled

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the job got: FRACTION from 0 to 1, and a short MESSAGE. Cheap in
        a tight loop (coalesced to ~10 writes/s); InvalidProgress for a bad value."""
        report = checked_report(self.job.id, self.job.queue, fraction, message)
        if self.progress_sink is not None:
            self.progress_sink.progress(report)


current_job: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "sandboxrunner_current_job", default=None
)
