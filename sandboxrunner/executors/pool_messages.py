"""What a pool's children send, as the pool handles it: the messages on each child's
message pipe (DONE settles its job, PROGRESS and LOG go to their sinks, READY makes it
idle; anything else is a broken protocol and kills it) and the output on its output pipe
(one log line of its job per line). `ChildPool` (pool.py) mixes this in: the manager
thread calls `_on_event` with the pool's lock held, and the pool's side of the contract
(reporting, killing, handling an exit) is declared below and defined there. What the
pool tells its executor (`PoolEvents`) is here, as these handlers tell most of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..config import Config
from ..context import LogSink, ProgressSink, log_line
from ..progress import report_from_json
from ..store import Settlement
from . import deaths, pipes
from .pool_child import (
    IDLE,
    Assigned,
    Child,
    Done,
    LogLine,
    Message,
    Progress,
    Ready,
    Silent,
    Starting,
    Stopping,
)
from .pool_watch import EXIT, OUT, PoolWatch

# the pool's logger: its lines keep the name they had before this module was split off
log = logging.getLogger("sandboxrunner.executors.pool")

# a child's message pipe reads EOF as it exits, just before its pidfd says so; a child
# still alive this long after the EOF closed the pipe itself and can no longer report
PIPE_EOF_GRACE_S = 0.5
DRAIN_LIMIT = 4 * 1024 * 1024  # per drain: a grandchild printing forever can't pin us


class PoolEvents(Protocol):
    """What the pool tells its executor, lock held."""

    def child_idle(self, child: Child) -> None:
        """CHILD waits for a job: hand it one if any waits."""

    def job_ran(self, job: Assigned) -> None:
        """JOB ended (done or timed out): how long it ran sizes the prefetch."""


class ChildMessages:
    """The pool's handling of what its children send (lock held)."""

    queue: str
    config: Config
    log_sink: LogSink
    progress_sink: ProgressSink | None
    events: PoolEvents
    idle: list[Child]
    cond: threading.Condition
    wake: Callable[[], None]
    _watch: PoolWatch

    # -- the pool's side, defined in pool.py -----------------------------------------
    def report(self, outcome: Settlement) -> None:
        raise NotImplementedError

    def _kill(self, child: Child, why: str, graceful: bool, expected: bool = False) -> None:
        raise NotImplementedError

    def _on_exit(self, child: Child) -> None:
        raise NotImplementedError

    # -- what a child sends ----------------------------------------------------------
    def _on_event(self, child: Child, kind: int) -> None:
        # a stopping child's pipes were let go with its job: this is an event from the
        # same select() as the kill
        if kind == EXIT:
            self._on_exit(child)
        elif isinstance(child.state, Stopping):
            return
        elif kind == OUT:
            self._read_output(child, 0)
        elif child.serving and self._read_messages(child, pipes.READ_CHUNK) \
                and child.serving:
            self._on_pipe_closed(child)

    def _read_messages(self, child: Child, budget: int, exited: bool = False) -> bool:
        """Handle what the child writes, reading again after each batch, until its pipe
        is empty or BUDGET bytes came; whether the pipe reached EOF. A quick child's next
        DONE is often there by then: it is handled without a select in between. EXITED:
        the child is dead, so no job is handed to it any more."""
        while budget > 0 and child.serving:
            try:
                messages, size = child.read_messages()
                for message in messages:
                    self._on_message(child, message, exited)
            except pipes.ProtocolError as exc:
                self._on_protocol_error(child, exc)
                return False
            if size <= 0:
                return size == 0
            budget -= size
        return False

    def _on_pipe_closed(self, child: Child) -> None:
        self._watch.unwatch(child.msg_fd)
        if child.pidfd < 0:
            self._on_exit(child)  # no pidfd: the EOF is all we learn
            return
        child.move(Silent(time.monotonic() + PIPE_EOF_GRACE_S, child.job))
        self._forget_idle(child)
        self.wake()

    def _on_message(self, child: Child, message: Message, exited: bool) -> None:
        job = child.state.job
        if isinstance(message, Done):
            if job is None:
                raise pipes.ProtocolError("a DONE frame without a running job")
            self._on_done(child, job, message, exited)
        elif isinstance(message, Progress):
            report = report_from_json(message.job_id, self.queue, message.text)
            if report and self.progress_sink and job is not None and job.id == report.job_id:
                self.progress_sink.progress(report)
        elif isinstance(message, LogLine):
            if job is not None and job.id == message.job_id:
                self.log_sink.emit(job.id, self.queue, message.line)
            elif message.line.get("msg"):  # a thread left behind by an earlier job
                log.info("child %d of queue %s, no job running: %s", child.pid, self.queue,
                         message.line.get("msg"))
        elif isinstance(message, Ready):
            if not isinstance(child.state, Starting):
                raise pipes.ProtocolError("READY from a child that was not starting")
            if not exited:
                self._make_idle(child)
        else:
            log.error("child %d of queue %s failed to initialise: %s", child.pid,
                      self.queue, message.why)

    def _on_done(self, child: Child, job: Assigned, done: Done, exited: bool) -> None:
        self._read_output(child, DRAIN_LIMIT, final=True)  # C-level output of this job
        self.events.job_ran(job)
        child.jobs_served += 1
        self.report(Settlement(job.id, done.status, done.body))
        if exited:
            child.move(IDLE)  # done, then dead: no job to fail
            return
        reason = child.recycle_reason(self.config.max_jobs_per_child,
                                      self.config.max_memory_per_child)
        if reason:
            log.info("recycling child %d of queue %s: %s", child.pid, self.queue, reason)
            self._kill(child, reason, graceful=False, expected=True)
        else:
            self._make_idle(child)

    def _make_idle(self, child: Child) -> None:
        child.move(IDLE)
        self.idle.append(child)
        self.events.child_idle(child)
        self.cond.notify_all()

    def _on_protocol_error(self, child: Child, exc: Exception) -> None:
        log.error("child %d of queue %s broke the pipe protocol (%s): killing it",
                  child.pid, self.queue, exc)
        self._kill_and_fail(child, "it broke the pipe protocol",
                            f"wrote invalid data to its pipe ({exc})")

    def _kill_and_fail(self, child: Child, why: str, what_it_did: str) -> None:
        job = child.job
        self._kill(child, why, graceful=False)
        if job is not None:
            self.report(deaths.broke_protocol(job.id, child.pid, what_it_did))

    def _read_output(self, child: Child, budget: int, final: bool = False) -> None:
        lines, eof = child.read_output(budget, final)
        if eof:
            self._watch.unwatch(child.out_fd)  # every writer closed it
        job = child.job
        for text in lines:
            if job is not None:
                self.log_sink.emit(job.id, self.queue, log_line("info", text,
                                                                source="output"))
            elif text:
                log.info("child %d of queue %s, no job running: %s", child.pid,
                         self.queue, text)

    def _forget_idle(self, child: Child) -> None:
        if child in self.idle:
            self.idle.remove(child)
