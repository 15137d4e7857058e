"""Thread mode: what a job prints becomes log lines of that job, as in process mode.

Every job of a thread executor shares the process's ``sys.stdout`` and ``sys.stderr``.
While one runs (``capture_job_output`` .. ``release_job_output``, counted), both are
replaced by a `JobStream` that asks, at each write, which job the writing code runs in:
the `JobContext` in ``context.current_job``, which the executor sets around the handler,
so it follows a sync job's thread and an async job's task (and the tasks that task
starts, which copy its context). A job's text goes to its `JobOutput`, which cuts it into
lines and sends each to the job's log with source ``stdout`` (level info) or ``stderr``
(level warn), like a child's LineWriter; a partial line waits for its newline or the end
of the job. Writes of any other code (the app's own threads beside an in-process worker,
the supervisor's threads) go to the stream that was there before, untouched.

A process forked by a job (multiprocessing, os.fork) has no log sink running: there every
write goes to the replaced stream, as it would without the capture.

A `JobOutput` is closed when the handler returns; what code of the job writes after that
(a task it left running) goes to the real stream again. A timed-out job's thread, which
cannot be stopped, goes on writing to the job's log until its handler returns, as its
``ctx.log`` lines do.

Not captured in thread mode, since one process has one fd 1 and one fd 2 (process mode,
where each child has its own, captures all of these):
  * writes below ``sys.stdout``: ``os.write(1, ...)``, C extensions' printf, subprocesses
    inheriting fd 1 or 2, ``sys.stdout.buffer``, ``sys.__stdout__``;
  * threads the job starts with ``threading.Thread`` (they start with an empty context;
    ``asyncio.to_thread`` and ``contextvars.copy_context().run`` carry it over);
  * code holding the stream from before the worker started (a ``logging.StreamHandler``).
An app that replaces ``sys.stdout`` itself after the worker started takes over its
jobs' prints too.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from .context import current_job, log_line

if TYPE_CHECKING:
    from .context import LogSink

MAX_LINE_CHARS = 64 * 1024  # a longer unfinished line is sent as it is
LEVELS = {"stdout": "info", "stderr": "warn"}


class LineBuffer:
    """Text written in pieces, cut into lines; an unfinished line past MAX_LINE_CHARS
    is let out as it is, so a job writing without newlines cannot fill the memory."""

    __slots__ = ("_parts", "_size")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0

    def feed(self, text: str) -> list[str]:
        """Add TEXT; the lines it completes."""
        self._parts.append(text)
        self._size += len(text)
        if "\n" not in text and self._size < MAX_LINE_CHARS:
            return []
        *lines, rest = "".join(self._parts).split("\n")
        if len(rest) >= MAX_LINE_CHARS:
            lines.append(rest)
            rest = ""
        self._parts, self._size = ([rest] if rest else []), len(rest)
        return lines

    def rest(self) -> str:
        """Take the unfinished line (at the end of a job)."""
        rest = "".join(self._parts)
        self._parts, self._size = [], 0
        return rest


class JobOutput:
    """What one job writes to sys.stdout and sys.stderr, as lines of its log."""

    __slots__ = ("_sink", "_job_id", "_queue", "_buffers", "_lock", "_open")

    def __init__(self, sink: LogSink, job_id: str, queue: str) -> None:
        self._sink, self._job_id, self._queue = sink, job_id, queue
        self._buffers: dict[str, LineBuffer] = {}  # by source, made at the first write
        self._lock = threading.Lock()
        self._open = True

    def write(self, source: str, text: str) -> bool:
        """Send TEXT's complete lines to the job's log; False once it is closed."""
        with self._lock:
            if not self._open:
                return False
            buffer = self._buffers.get(source)
            if buffer is None:
                buffer = self._buffers[source] = LineBuffer()
            for line in buffer.feed(text):
                self._emit(source, line)
            return True

    def close(self) -> None:
        """The handler returned: its unfinished lines are sent, later writes go elsewhere."""
        with self._lock:
            self._open = False
            for source, buffer in self._buffers.items():
                rest = buffer.rest()
                if rest:
                    self._emit(source, rest)

    def _emit(self, source: str, text: str) -> None:
        self._sink.emit(self._job_id, self._queue, log_line(LEVELS[source], text,
                                                            source=source))


class JobStream:
    """sys.stdout or sys.stderr while jobs run on threads: a job's text to its log, any
    other to the stream it replaced. Everything but writing is the replaced stream's."""

    def __init__(self, replaced: Any, source: str) -> None:
        self.replaced, self.source = replaced, source

    def write(self, text: str) -> int:
        ctx = current_job.get() if _routing else None
        output = ctx.output if ctx is not None else None
        if output is not None:
            if not isinstance(text, str):
                raise TypeError(f"write() argument must be str, not {type(text).__name__}")
            if output.write(self.source, text):
                return len(text)
        if self.replaced is None:  # no stream at all (pythonw, a closed fd)
            return len(text)
        return int(self.replaced.write(text))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self.replaced is not None:
            self.replaced.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.replaced, name)  # encoding, fileno, isatty, buffer...


_lock = threading.Lock()
_users = 0
_routing = True  # False in a process forked from this one: its log sink did not come along


def _forked() -> None:
    # what the parent's executors counted is theirs; one started here captures afresh
    global _routing, _users, _lock
    _routing, _users, _lock = False, 0, threading.Lock()


os.register_at_fork(after_in_child=_forked)


def capture_job_output() -> None:
    """Route the prints of jobs to their logs until as many ``release_job_output``."""
    global _users, _routing
    with _lock:
        _users += 1
        _routing = True
        if _users == 1:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if not isinstance(stream, JobStream):
                    setattr(sys, name, JobStream(stream, name))


def release_job_output() -> None:
    """Undo one ``capture_job_output``; the last puts the replaced streams back, unless
    something else replaced ours since (ours then passes everything through)."""
    global _users
    with _lock:
        _users -= 1
        if _users == 0:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if isinstance(stream, JobStream):
                    setattr(sys, name, stream.replaced)
