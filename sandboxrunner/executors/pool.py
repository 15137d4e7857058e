"""A process pool's children and the manager thread that waits on all of them at once.

The pool keeps ``size`` children serving (asking the fork server for new ones), writes
the RUN frames its executor prepared (processes.py draws the data flow), and turns what
children do into outcomes: DONE settles a job; a crash, a timeout, a memory limit or a
broken pipe protocol fails it (deaths.py) and kills the child's process group. A child's
states: pool_child.py; timers: pool_timers.py; what children send: pool_messages.py
(mixed into the pool). Everything runs with the pool's lock held
(the executor's too), but psutil's memory samples; outcomes are reported once the lock
is let go, since reporting may write to Redis.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque

import psutil

from ..config import Config
from ..context import LogSink, ProgressSink
from ..store import Settlement
from . import deaths, pipes
from .base import Report
from .deaths import RespawnLimiter
from .forkserver import ForkServer, ForkServerUnavailable
from .pool_child import Assigned, Busy, Child, Exited, Silent, Stopping
from .pool_messages import DRAIN_LIMIT, ChildMessages, PoolEvents
from .pool_timers import PoolTimers
from .pool_watch import PoolWatch
from .process_tree import signal_tree, tree_rss

log = logging.getLogger(__name__)

MIB = 1024 * 1024
SERVER_WAIT_S = 1.0  # the fork server is being replaced: ask again then, or once woken


class ChildPool(ChildMessages):
    def __init__(self, queue: str, config: Config, server: ForkServer, report: Report,
                 log_sink: LogSink, events: PoolEvents,
                 progress_sink: ProgressSink | None = None) -> None:
        self.queue, self.config, self.server = queue, config, server
        self.progress_sink = progress_sink
        self.log_sink, self.events, self._report_now = log_sink, events, report
        self.size = config.effective_concurrency()
        self.limits = dict(config.child_limits or {})
        self._counters = server.counters.of(queue)  # context.PoolSlots of the children
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.children: dict[int, Child] = {}
        self.idle: list[Child] = []
        self.timers = PoolTimers(bool(config.memory_limit_per_child))
        self._limiter = RespawnLimiter()
        self.closed = False
        self._reports: deque[Settlement] = deque()
        self._watch = PoolWatch()
        self.wake = self._watch.wake
        server.on_ready(self._server_ready)
        self._thread = threading.Thread(target=self._manage, name=f"sr-{queue}-pool",
                                        daemon=True)
        self._thread.start()

    # -- for the executor (lock held) ------------------------------------------------
    def start_job(self, child: Child, job: Assigned, frame: bytes) -> bool:
        """Hand JOB's RUN FRAME to idle CHILD; False if its pipe failed (it is killed)."""
        try:
            pipes.write_all(child.cmd_fd, frame)
        except OSError as exc:
            # it died since it was idle: the job never started
            self._kill(child, f"its command pipe failed ({exc})", graceful=False)
            return False
        child.move(Busy(job))
        if self.timers.add_deadline(child.pid, job):
            self.wake()  # the manager sleeps toward a later time
        return True

    def report(self, outcome: Settlement) -> None:
        """Hand OUTCOME on once the lock is let go; nothing is reported once closed (the
        supervisor hands those jobs back)."""
        if not self.closed:
            self._reports.append(outcome)

    def cancel_running(self, job_id: str) -> bool:
        """Kill the child running JOB_ID and all it started, as at a timeout but at once,
        and report the job cancelled; False if no child runs it (the lock is held)."""
        child = next((c for c in self.busy() if c.job is not None and c.job.id == job_id), None)
        if child is None or child.job is None:
            return False
        log.warning("job %s %s cancelled: killing child %d and its processes", job_id,
                    child.job.name, child.pid)
        self.events.job_ran(child.job)
        self._kill(child, f"job {job_id} was cancelled", graceful=False, expected=True)
        self.report(Settlement.cancelled(job_id, f"cancelled while running: its child "
                                                 f"{child.pid} and its processes were killed"))
        self.wake()  # the manager reports it and forks the replacement
        return True

    def respawn_backoff_s(self) -> float:
        return self._limiter.delay_s

    def busy(self) -> list[Child]:
        return [c for c in self.children.values() if isinstance(c.state, Busy)]

    def close(self) -> None:
        """Kill every child and its group, reap them all (lock not held)."""
        with self.lock:
            self.closed = True
        self.server.forget(self._server_ready)
        self.wake()
        self._thread.join(timeout=10)

    def _server_ready(self) -> None:
        """A new fork server runs (called from its watching thread): fork at once."""
        with self.lock:
            if not self.closed:
                self.timers.respawn_at = 0.0
                self.wake()

    # -- the manager thread ----------------------------------------------------------
    def _manage(self) -> None:
        try:
            while not self.closed:
                try:
                    self._manage_once()
                except Exception:  # noqa: BLE001 - the pool must outlive its own bugs
                    log.exception("process pool of %s: unexpected error", self.queue)
                    time.sleep(0.05)
        finally:
            self._terminate_all()

    def _manage_once(self) -> None:
        if self.timers.memory_due(time.monotonic()):
            self._check_memory()
            self._flush_reports()
        with self.lock:
            if self.closed:
                return
            self._run_timers(time.monotonic())
            self._fill_pool(time.monotonic())
            timeout = self.timers.sleep_for(time.monotonic(), self.children.values(),
                                             self._live() < self.size)
        self._flush_reports()
        events = self._watch.wait(timeout)
        with self.lock:
            for child, kind in events:
                if not isinstance(child.state, Exited):
                    self._on_event(child, kind)
        self._flush_reports()

    def _flush_reports(self) -> None:
        while self._reports:
            self._report_now(self._reports.popleft())

    def _live(self) -> int:
        return sum(1 for c in self.children.values() if c.state.serving)

    # -- new children ----------------------------------------------------------------
    def _fill_pool(self, now: float) -> None:
        while self._live() < self.size and now >= self.timers.respawn_at:
            try:
                self._spawn()
            except ForkServerUnavailable:
                self.timers.respawn_at = now + SERVER_WAIT_S  # or sooner, once woken
                return
            except OSError as exc:
                delay = max(self._limiter.record(now), 1.0)
                self.timers.respawn_at = now + delay
                log.error("could not fork a child for queue %s (%s); retrying in %.1f s",
                          self.queue, exc, delay)
                return

    def _spawn(self) -> None:
        used = {c.slot for c in self.children.values()}
        slot = min(set(range(len(self._counters))) - used)
        new = self.server.spawn(self.queue, slot)
        child = Child(new.pid, new.cmd_fd, new.msg_fd, new.out_fd, new.pidfd,
                      psutil.Process(new.pid), slot, new.server, dict(new.server.known))
        self.children[child.pid] = child
        self._watch.watch(child)
        log.debug("forked child %d for queue %s", child.pid, self.queue)

    # -- deaths and kills ------------------------------------------------------------
    def _on_exit(self, child: Child) -> None:
        """The child exited: settle what it sent, kill its leftovers, reap, replace."""
        if child.serving:
            self._read_messages(child, DRAIN_LIMIT, exited=True)  # written before dying
        if not isinstance(child.state, Stopping):
            self._read_output(child, DRAIN_LIMIT, final=True)
        state, job = child.state, child.job
        # not reaped yet, so its group id cannot be a stranger's
        signal_tree(child.pid, signal.SIGKILL,
                    state.doomed if isinstance(state, Stopping) else ())
        status = self.server.reap(child.pid, child.server)
        lost_with = 0 if child.server.alive else child.server.pid
        self._forget(child)
        how = deaths.describe_exit(child.pid, status, self.limits, lost_with)
        if job is not None:
            log.error("job %s %s failed after %.0f ms: %s; replacing the child", job.id,
                      job.name, (time.time() - job.started_at) * 1000, how)
            self.report(deaths.crashed(job.id, how))
        elif not isinstance(state, Stopping):  # a death we did not cause, between jobs
            log.error("child %d of queue %s died while %s: %s", child.pid, self.queue,
                      state.label, how)
        if not (isinstance(state, Stopping) and state.expected) and not lost_with:
            now = time.monotonic()
            delay = self._limiter.note_crash(now, f"the process pool of queue {self.queue}")
            self.timers.respawn_at = max(self.timers.respawn_at, now + delay)
        self.cond.notify_all()

    def _forget(self, child: Child) -> None:
        child.move(Exited())
        self._forget_idle(child)
        self._watch.unwatch(child.msg_fd, child.out_fd, child.pidfd)
        for fd in child.fds():
            if fd >= 0:
                os.close(fd)
        self.children.pop(child.pid, None)
        self._counters[child.slot] = 0  # it died, perhaps inside a nested run_job

    def _kill(self, child: Child, why: str, graceful: bool, expected: bool = False) -> None:
        """Stop CHILD and all it started: SIGTERM then SIGKILL if GRACEFUL."""
        self._forget_idle(child)
        self._watch.unwatch(child.msg_fd, child.out_fd)  # its job is settled
        child.stop(why, graceful, expected)
        self.cond.notify_all()

    def _run_timers(self, now: float) -> None:
        for child, job in self.timers.expired(now, self.children):
            self._expire(child, job)
        for child in list(self.children.values()):
            state = child.state
            if state.wake_at is None or state.wake_at > now:
                continue
            if isinstance(state, Stopping):
                child.escalate(now)
            elif isinstance(state, Silent):
                log.error("child %d of queue %s closed its message pipe but lives on: "
                          "killing it", child.pid, self.queue)
                self._kill_and_fail(child, "it closed its message pipe",
                                    "closed its message pipe to the supervisor, so it "
                                    "could not report")
            else:
                log.error("child %d of queue %s did not start in time: killing it",
                          child.pid, self.queue)
                self._kill(child, "it did not start in time", graceful=False)

    def _expire(self, child: Child, job: Assigned) -> None:
        log.warning("job %s %s timed out after %d ms: killing child %d and its processes",
                    job.id, job.name, job.timeout_ms, child.pid)
        self.events.job_ran(job)
        self._kill(child, f"job {job.id} timed out", graceful=True, expected=True)
        self.report(deaths.killed_at_deadline(job.id, job.timeout_ms, child.pid))

    def _check_memory(self) -> None:
        """Kill a job whose child tree's RSS passed memory_limit_per_child. psutil runs
        without the lock: a tree walk reads /proc and must not hold up job handoffs."""
        limit_mib = self.config.memory_limit_per_child or 0
        with self.lock:
            busy = [(c, c.job) for c in self.busy()]
        over = [(c, job, rss) for c, job in busy
                if (rss := tree_rss(c.proc)) > limit_mib * MIB]
        with self.lock:
            for child, job, rss in over:
                if job is None or child.job is not job:
                    continue  # it ended meanwhile
                log.error("job %s %s: child %d and its processes use %.0f MiB, over "
                          "memory_limit_per_child=%d MiB: killing them", job.id, job.name,
                          child.pid, rss / MIB, limit_mib)
                self._kill(child, f"job {job.id} passed the memory limit", graceful=False,
                           expected=True)
                self.report(deaths.over_memory(job.id, child.pid, rss, limit_mib))

    def _terminate_all(self) -> None:
        """The pool is closing: kill every child and its group, reap them all."""
        with self.lock:
            children = list(self.children.values())
            for child in children:
                if isinstance(child.state, Stopping):
                    child.escalate(float("inf"))
                else:
                    self._kill(child, "the pool is closing", graceful=False, expected=True)
            for child in children:
                self.server.reap(child.pid, child.server)
                self._forget(child)
            self._watch.close()
            self.cond.notify_all()
