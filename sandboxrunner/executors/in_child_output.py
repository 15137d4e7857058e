"""Runs inside a child: where its job's output goes. ctx.log lines and ctx.progress
reports become LOG and PROGRESS frames on the child's message pipe (pipes.py), and
sys.stdout and sys.stderr become line writers that send each complete line as a LOG
frame, so Python prints stay in order with ctx.log lines; bytes written below Python
(C-level writes, subprocesses) go to the output pipe instead (in_child.py's docstring).
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any, Protocol

from ..context import log_line
from ..joboutput import LineBuffer
from ..progress import ProgressBuffer, ProgressReport
from . import pipes


class FrameSender(Protocol):
    """Writes whole frames to the supervisor (in_child.Sender)."""

    def send(self, kind: int, payload: bytes = b"") -> None: ...


class PipeLogSink:
    """ctx.log in a child: each line goes to the supervisor as a LOG frame."""

    def __init__(self, sender: FrameSender, queue: str, max_lines: int) -> None:
        self.sender, self.queue, self.max_lines = sender, queue, max_lines
        self.job_id = ""
        self._count = 0

    def begin(self, job_id: str) -> None:
        self.job_id, self._count = job_id, 0

    def emit(self, job_id: str, queue: str, line: dict[str, Any]) -> None:
        if job_id == self.job_id:
            self._count += 1
            # the supervisor keeps max_lines and one "truncated" marker; spare the pipe
            if self._count > self.max_lines + 1:
                return
        try:
            text = json.dumps(line, default=str)
        except (TypeError, ValueError):  # circular data: keep the line, lose the data
            text = json.dumps({**line, "data": repr(line.get("data"))}, default=str)
        self.sender.send(pipes.LOG, f"{job_id}\n{text}".encode())


class PipeProgressSink:
    """ctx.progress in a child: the latest report goes to the supervisor as a PROGRESS
    frame at most every PROGRESS_INTERVAL_S (progress.py); the last one before DONE."""

    def __init__(self, sender: FrameSender) -> None:
        self.sender = sender
        self.buffer = ProgressBuffer(self._send, "sr-child-progress")

    def progress(self, report: ProgressReport) -> None:
        self.buffer.offer(report)

    def _send(self, batch: list[ProgressReport]) -> None:
        for report in batch:
            self.sender.send(pipes.PROGRESS, f"{report.job_id}\n{report.to_json()}".encode())


class LineWriter(io.TextIOBase):
    """sys.stdout / sys.stderr of a child: each complete line becomes a log line."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, sink: PipeLogSink, fd: int, source: str, level: str) -> None:
        self._sink, self._fd, self._source, self._level = sink, fd, source, level
        self._lines = LineBuffer()  # thread mode's JobOutput cuts lines the same way
        self._lock = threading.Lock()
        # bytes written to sys.stdout.buffer go to the output pipe, as C-level writes do
        self.buffer = open(fd, "wb", buffering=0, closefd=False)  # noqa: SIM115

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            lines = self._lines.feed(text)
        for line in lines:
            self._emit(line)
        return len(text)

    def finish(self) -> None:
        """Send a last line without its newline (at the end of a job)."""
        with self._lock:
            rest = self._lines.rest()
        if rest:
            self._emit(rest)

    def _emit(self, text: str) -> None:
        sink = self._sink
        sink.emit(sink.job_id, sink.queue, log_line(self._level, text, source=self._source))

    def fileno(self) -> int:
        return self._fd  # subprocess and faulthandler want a real fd: the output pipe

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True
