"""Process executor: every job runs in a pre-forked child that can really be killed.

One pool per queue, of ``config.effective_concurrency()`` children forked after the
registry was loaded (``child.py`` is their side). One manager thread per pool does all
the waiting, for every child at once:

  fetch thread              manager thread (one per pool)               children
  ------------              -----------------------------               --------
  submit(job) ----- RUN frame on the child's command pipe ---------->  child.py:
   (takes an idle child;                                                 runs the
    backlog if none)        selector over, per child:                    handler
                              message pipe  <--- READY, LOG, DONE ----
                              output pipe   <--- fd 1/2 bytes ---------
                              pidfd         <--- it exited
                            plus one wakeup pipe.
                            LOG, output  -> sink.emit (RedisLogSink)
                            DONE         -> report(Settlement) once the pool's
                                            lock is let go (it may write to Redis)
                            exit         -> kill what is left of its group, reap,
                                            fail its job (CRASHED), fork a new one
                            timers: deadline -> SIGTERM the group, SIGKILL after
                                    KILL_GRACE_S, report the timeout;
                                    memory samples (psutil) -> kill, report MEMORY

Child states: starting -> idle <-> busy -> dying -> reaped. A dying child (timed out,
over a limit, recycled, broken) no longer counts toward the pool, so its replacement
is forked at once and the pool is full again while the old group is still dying.

Jobs known at fork time are in a child's memory; a spec the child lacks (registered
after the fork, or replaced) is sent once with cloudpickle in the RUN frame, and the
pool remembers that this child now has it. Children dying faster than RespawnLimiter
allows are replaced after an exponential backoff instead of a fork storm. A fork never
happens while another thread of ours is inside an OpenSSL handshake (forkguard.py): the
child would inherit OpenSSL's locks held and hang at its first TLS connection.

What is done to one child (the fork itself, signalling its group, reaping, its tree's
RSS) and the records kept of it (Child, Assigned, State) are in children.py; this module
decides when, under the pool's lock.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import logging
import multiprocessing.sharedctypes
import os
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle
import psutil

from .. import child as child_mod
from .. import pipes
from ..config import Config
from ..context import LogSink, PoolSlots, log_line
from ..errors import UnknownJob
from ..forkguard import FORK_GUARD
from ..job import ErrorKind, Status
from ..registry import JobSpec, Registry
from ..store import ClaimedJob, Settlement
from .base import Report, RunningJob, deadline_after, failure, timed_out
from .children import (
    Assigned,
    Child,
    RespawnLimiter,
    State,
    close_fds,
    descendants,
    describe_exit,
    fork_child,
    open_supervisor_pipe,
    reap,
    signal_tree,
    tree_rss,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024
KILL_GRACE_S = 0.15  # SIGTERM to SIGKILL
STARTUP_TIMEOUT_S = 10.0
# a child's message pipe reads EOF as it exits, just before its pidfd says so; a child
# still alive this long after the EOF closed the pipe itself and can no longer report
PIPE_EOF_GRACE_S = 0.5
# a fork that found threads inside TLS handshakes is put off: the manager thread waits up
# to FORK_WAIT_S for them, without the pool's lock (snapshots, submits and the heartbeat
# must not queue behind a handshake), then tries again
FORK_WAIT_S = 0.05
MEMORY_SAMPLE_S = 0.1
MAX_OUTPUT_LINE = 64 * 1024
DRAIN_LIMIT = 4 * 1024 * 1024  # per drain: a grandchild printing forever can't pin us
PREFETCH_WAIT_MS = 5.0  # the backlog holds about this much work (see _backlog_limit)
PREFETCH_MAX = 8  # jobs per child in the backlog at most
RUN_TIME_WEIGHT = 0.1  # of the latest job in the running average of run times
MSG, OUT, EXIT = 0, 1, 2  # selector event kinds, in the order they are handled


class ProcessExecutor:
    def __init__(self, queue: str, registry: Registry, config: Config, report: Report,
                 log_sink: LogSink, make_client: Callable[[], Any] | None = None) -> None:
        self.queue = queue
        self.registry = registry
        self.config = config
        self.report = report
        self.log_sink = log_sink
        self.size = config.effective_concurrency()
        # one counter per child slot, shared with the children (forked after this); twice
        # the pool size, since a dying child keeps its slot until it is reaped
        self._nested_calls = multiprocessing.sharedctypes.RawArray("i", 2 * self.size + 2)
        self.limits = dict(config.child_limits or {})
        self._make_client = make_client  # a child's client for a nested run_job
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._children: dict[int, Child] = {}
        self._idle: list[Child] = []
        self._backlog: deque[tuple[ClaimedJob, JobSpec]] = deque()
        self._deadlines: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._blobs: dict[int, tuple[JobSpec, bytes]] = {}
        self._limiter = RespawnLimiter()
        self._respawn_at = 0.0
        self._fork_put_off = False  # the last fork found a thread inside OpenSSL
        self._next_sample = 0.0
        self._wake_at = 0.0
        self._closed = False
        self._reports: deque[Settlement] = deque()  # outcomes to report once unlocked
        self._avg_run_ms: float | None = None  # recent run time of a job (sizes the backlog)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = open_supervisor_pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        # the children are forked by this thread: PR_SET_PDEATHSIG follows the thread
        self._thread = threading.Thread(target=self._manage, name=f"sr-{queue}-pool",
                                         daemon=True)
        self._thread.start()

    # -- Executor protocol -----------------------------------------------------------
    def free_slots(self) -> int:
        with self._lock:
            return self._free()

    def wait_for_slot(self, timeout_s: float) -> bool:
        with self._cond:
            if self._free() <= 0:
                self._cond.wait(timeout_s)
            return self._free() > 0

    def admit_inline(self, job: ClaimedJob) -> None:
        return None  # jobs run in the children, never on a supervisor thread

    def jobs_in_hand(self) -> int:
        with self._lock:
            return len(self._backlog) + sum(
                1 for c in self._children.values() if c.state is State.BUSY)

    def submit(self, job: ClaimedJob) -> None:
        try:
            spec = self.registry.get(job.name)
        except UnknownJob as exc:
            self.report(failure(job.id, ErrorKind.INVALID, "UnknownJob",
                                f"this supervisor has no such job: {exc}"))
            return
        with self._lock:
            if self._idle:
                self._start(self._idle.pop(), job, spec)
            else:
                self._backlog.append((job, spec))

    def running(self) -> list[RunningJob]:
        with self._lock:
            return [RunningJob(c.job.id, c.job.name, self.queue, c.job.started_at,
                               c.job.timeout_ms, str(c.pid))
                    for c in self._children.values() if c.state is State.BUSY and c.job]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            rows = [(c.pid, c.state.value, c.job, c.jobs_served, c.proc)
                    for c in self._children.values()]
            backlog, backoff = len(self._backlog), self._limiter.delay_s
        children = []
        for pid, state, job, served, proc in rows:
            try:
                with proc.oneshot():
                    cpu, rss = proc.cpu_percent(None), proc.memory_info().rss
            except psutil.Error:
                cpu, rss = 0.0, 0
            children.append({"pid": pid, "state": state, "job_id": job.id if job else None,
                             "job_name": job.name if job else None, "cpu_percent": cpu,
                             "rss_bytes": rss, "jobs_served": served})
        return {"mode": "processes", "capacity": self.size, "backlog": backlog,
                "running": sum(1 for c in children if c["state"] == "busy"),
                "respawn_backoff_s": backoff, "children": children}

    def shutdown(self, grace_ms: int) -> list[str]:
        end = time.monotonic() + grace_ms / 1000
        with self._cond:
            while self._busy() and (left_s := end - time.monotonic()) > 0:
                self._cond.wait(left_s)
            left = [c.job.id for c in self._children.values()
                    if c.state is State.BUSY and c.job]
            left += [job.id for job, _ in self._backlog]
            self._backlog.clear()
            self._closed = True  # from now on nothing is reported: those jobs go back
        self._wake()
        self._thread.join(timeout=10)
        return left

    # -- handing jobs to children (lock held) ----------------------------------------
    def _free(self) -> int:
        # Claimed jobs wait in the backlog (up to _backlog_limit), so a child that
        # finishes gets its next job from memory at once, not after a claim round trip to
        # Redis; their deadlines start when a child takes them. While every child is busy
        # and the backlog still holds half of that, no slot is offered, so the fetch
        # thread claims several jobs per round trip instead of one per job.
        limit = self._backlog_limit()
        if not self._idle and len(self._backlog) * 2 >= limit > 1:
            return 0
        return max(0, len(self._idle) + limit - len(self._backlog))

    def _backlog_limit(self) -> int:
        """How many claimed jobs may wait for a child: about PREFETCH_WAIT_MS of work at
        the jobs' recent pace, from one per child (long jobs, or none run yet: a job
        waiting here is one another supervisor cannot take) to PREFETCH_MAX per child
        (short jobs: fewer claims and settlements per job)."""
        if self._avg_run_ms is None:
            return self.size
        fit = int(self.size * PREFETCH_WAIT_MS / max(self._avg_run_ms, 0.001))
        return max(self.size, min(self.size * PREFETCH_MAX, fit))

    def _note_run_time(self, job: Assigned) -> None:
        """Fold how long JOB ran into the recent average that sizes the backlog."""
        ran_ms = max(0.0, time.monotonic() - (job.deadline - job.timeout_ms / 1000)) * 1000
        avg = self._avg_run_ms
        self._avg_run_ms = ran_ms if avg is None else avg + RUN_TIME_WEIGHT * (ran_ms - avg)

    def _busy(self) -> bool:
        return any(c.state is State.BUSY for c in self._children.values())

    def _start(self, child: Child, job: ClaimedJob, spec: JobSpec) -> None:
        try:
            blob = None if child.known.get(job.name) is spec else self._pickled(spec)
        except Exception as exc:  # noqa: BLE001 - cloudpickle raises many kinds
            self._idle.append(child)
            self.report(failure(job.id, ErrorKind.INVALID, "UnpicklableJob",
                                f"job {job.name!r} cannot be sent to a child process: "
                                f"cloudpickle failed: {exc}"))
            return
        data = child_mod.encode_call(child_mod.Call(
            job.id, job.name, job.data_json, job.timeout_ms, job.attempt,
            job.enqueued_at_ms, job.started_at_ms, blob))
        deadline = deadline_after(job.timeout_ms)
        child.state = State.BUSY
        child.job = Assigned(job.id, job.name, job.timeout_ms, deadline, time.time())
        try:
            pipes.write_all(child.cmd_fd, data)
        except OSError as exc:
            # it died since it was idle: the job never started, give it to another child
            child.job = None
            self._kill(child, f"its command pipe failed ({exc})", graceful=False)
            self._backlog.appendleft((job, spec))
            return
        child.known[job.name] = spec
        heapq.heappush(self._deadlines, (deadline, next(self._seq), child.pid, job.id))
        # the manager sleeps until _wake_at, which may be a finished job's stale deadline:
        # wake it if this job needs it sooner, for its deadline or its first memory sample
        wake_by = deadline
        if self.config.memory_limit_per_child:
            wake_by = min(wake_by, self._next_sample)
        if wake_by < self._wake_at:
            self._wake()

    def _pickled(self, spec: JobSpec) -> bytes:
        cached = self._blobs.get(id(spec))
        if cached is None or cached[0] is not spec:
            cached = self._blobs[id(spec)] = (spec, cloudpickle.dumps(spec))
        return cached[1]

    def _run_backlog(self) -> None:
        while self._backlog and self._idle:
            job, spec = self._backlog.popleft()
            self._start(self._idle.pop(), job, spec)

    def _make_idle(self, child: Child) -> None:
        if child.exited:
            return
        child.state = State.IDLE
        self._idle.append(child)
        self._run_backlog()
        self._cond.notify_all()

    def _report(self, outcome: Settlement) -> None:
        # called by the manager thread under the lock: the outcome is handed on once the
        # lock is let go (_flush_reports), since reporting may write to Redis
        if not self._closed:
            self._reports.append(outcome)

    def _flush_reports(self) -> None:
        while self._reports:
            self.report(self._reports.popleft())

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # already full of wakeups

    # -- the manager thread ----------------------------------------------------------
    def _manage(self) -> None:
        try:
            while not self._closed:
                try:
                    self._manage_once()
                except Exception:  # noqa: BLE001 - the pool must outlive its own bugs
                    log.exception("process pool of %s: unexpected error", self.queue)
                    time.sleep(0.05)
        finally:
            self._terminate_all()

    def _manage_once(self) -> None:
        if self._fork_put_off:
            FORK_GUARD.wait_until_clear(FORK_WAIT_S)
        if self.config.memory_limit_per_child and time.monotonic() >= self._next_sample:
            self._next_sample = time.monotonic() + MEMORY_SAMPLE_S
            self._check_memory()
            self._flush_reports()
        with self._lock:
            if self._closed:
                return
            now = time.monotonic()
            self._run_timers(now)
            self._fill_pool(now)
            timeout = self._sleep_for(time.monotonic())
        self._flush_reports()
        events = self._selector.select(timeout)
        events.sort(key=lambda e: e[0].data[1] if e[0].data else -1)
        with self._lock:
            for key, _mask in events:
                if key.data is None:
                    self._drain_wakeups()
                elif not key.data[0].exited:
                    self._on_event(*key.data)
        self._flush_reports()

    def _sleep_for(self, now: float) -> float | None:
        times = [self._deadlines[0][0]] if self._deadlines else []
        for child in self._children.values():
            if child.kill_at is not None:
                times.append(child.kill_at)
            if child.eof_at is not None:
                times.append(child.eof_at)
            if child.state is State.STARTING:
                times.append(child.forked_at + STARTUP_TIMEOUT_S)
        if self._live() < self.size:
            times.append(self._respawn_at)
        if self.config.memory_limit_per_child and any(
                c.state is State.BUSY for c in self._children.values()):
            times.append(self._next_sample)
        self._wake_at = min(times, default=float("inf"))
        return None if not times else max(0.0, self._wake_at - now)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _live(self) -> int:
        return sum(1 for c in self._children.values() if c.state is not State.DYING)

    # -- forking ---------------------------------------------------------------------
    def _fill_pool(self, now: float) -> None:
        while self._live() < self.size and now >= self._respawn_at:
            try:
                self._fork_put_off = self._fork() is None
                if self._fork_put_off:
                    return  # a handshake is under way: _manage_once waits, unlocked
            except OSError as exc:
                delay = max(self._limiter.record(now), 1.0)
                self._respawn_at = now + delay
                log.error("could not fork a child for queue %s (%s); retrying in %.1f s",
                          self.queue, exc, delay)
                return

    def _fork(self) -> Child | None:
        """A new child, or None when threads stayed inside OpenSSL (forkguard.py)."""
        known = dict(self.registry.jobs)  # what the child will hold in its memory
        used = {c.slot for c in self._children.values()}
        slot = min(set(range(len(self._nested_calls))) - used)
        # fork_child adds the pipe ends and the parent pid
        setup = functools.partial(
            child_mod.ChildSetup, queue=self.queue, specs=known,
            log_max_lines=self.config.log_max_lines, limits=self.limits,
            make_client=self._make_client,
            slots=PoolSlots(self.queue, self.size, self._nested_calls, slot))
        child = fork_child(setup, slot)
        return None if child is None else self._track(child)

    def _track(self, child: Child) -> Child:
        msg_r, out_r, pidfd, pid = child.msg_fd, child.out_fd, child.pidfd, child.pid
        os.set_blocking(msg_r, False)
        os.set_blocking(out_r, False)
        self._children[pid] = child
        self._selector.register(msg_r, selectors.EVENT_READ, (child, MSG))
        self._selector.register(out_r, selectors.EVENT_READ, (child, OUT))
        if pidfd >= 0:
            self._selector.register(pidfd, selectors.EVENT_READ, (child, EXIT))
        log.debug("forked child %d for queue %s", pid, self.queue)
        return child

    # -- events ----------------------------------------------------------------------
    def _on_event(self, child: Child, kind: int) -> None:
        if kind == OUT:
            self._read_output(child, 0)
        elif kind == MSG:
            self._read_messages(child, once=True)
        else:
            self._on_exit(child)

    def _read_messages(self, child: Child, once: bool) -> None:
        """Handle what the child wrote: one read when ONCE, else until the pipe is empty."""
        budget = pipes.READ_CHUNK if once else DRAIN_LIMIT
        while budget > 0 and not child.broken:
            try:
                data = os.read(child.msg_fd, pipes.READ_CHUNK)
            except BlockingIOError:
                return
            if not data:
                self._unregister(child.msg_fd)
                child.broken = True  # nothing more will come
                if child.pidfd < 0:
                    self._on_exit(child)
                else:
                    child.eof_at = time.monotonic() + PIPE_EOF_GRACE_S
                    self._wake()
                return
            budget -= len(data)
            try:
                for kind, payload in child.reader.feed(data):
                    self._on_frame(child, kind, payload)
            except pipes.ProtocolError as exc:
                self._on_protocol_error(child, exc)

    def _on_frame(self, child: Child, kind: int, payload: bytes) -> None:
        if kind == pipes.LOG:
            self._on_log(child, payload)
        elif kind == pipes.DONE:
            self._on_done(child, payload)
        elif kind == pipes.READY:
            if child.state is not State.STARTING:
                raise pipes.ProtocolError("READY from a child that was not starting")
            self._make_idle(child)
        else:
            child.why = payload.decode(errors="replace")
            log.error("child %d of queue %s failed to initialise: %s", child.pid,
                      self.queue, child.why)

    def _on_log(self, child: Child, payload: bytes) -> None:
        job_id, sep, text = payload.partition(b"\n")
        try:
            line = json.loads(text)
        except ValueError as exc:
            raise pipes.ProtocolError(f"a LOG frame that is not JSON: {exc}") from None
        if not sep or not isinstance(line, dict):
            raise pipes.ProtocolError("a LOG frame that is not a job id and a JSON object")
        job = child.job
        if job is not None and child.state is State.BUSY and job.id == job_id.decode():
            self.log_sink.emit(job.id, self.queue, line)
        elif line.get("msg"):
            # a thread left behind by an earlier job, or a job killed a moment ago
            log.info("child %d of queue %s, no job running: %s", child.pid, self.queue,
                     line.get("msg"))

    def _on_done(self, child: Child, payload: bytes) -> None:
        job = child.job
        status = {ord("c"): Status.COMPLETED, ord("f"): Status.FAILED}.get(payload[:1][0]
                                                                           if payload else 0)
        if child.state is not State.BUSY or job is None or status is None:
            raise pipes.ProtocolError("a DONE frame without a running job or a status")
        try:
            body = payload[1:].decode()
        except UnicodeDecodeError as exc:
            raise pipes.ProtocolError(f"a DONE frame that is not UTF-8: {exc}") from None
        self._read_output(child, DRAIN_LIMIT, final=True)  # C-level output of this job
        self._note_run_time(job)
        child.job = None
        child.jobs_served += 1
        self._report(Settlement(job.id, status, body))
        reason = self._recycle_reason(child)
        if reason and not child.exited:
            log.info("recycling child %d of queue %s: %s", child.pid, self.queue, reason)
            self._kill(child, reason, graceful=False, expected=True)
        else:
            self._make_idle(child)

    def _recycle_reason(self, child: Child) -> str:
        max_jobs = self.config.max_jobs_per_child
        if max_jobs and child.jobs_served >= max_jobs:
            return f"it served {child.jobs_served} jobs (max_jobs_per_child={max_jobs})"
        max_mib = self.config.max_memory_per_child
        if max_mib:
            try:
                rss = child.proc.memory_info().rss
            except psutil.Error:
                return ""
            if rss > max_mib * MIB:
                return (f"its RSS of {rss / MIB:.0f} MiB is over "
                        f"max_memory_per_child={max_mib} MiB")
        return ""

    def _on_protocol_error(self, child: Child, exc: Exception) -> None:
        log.error("child %d of queue %s broke the pipe protocol (%s): killing it",
                  child.pid, self.queue, exc)
        job = child.job if child.state is State.BUSY else None
        child.broken = True
        self._unregister(child.msg_fd)
        self._kill(child, "it broke the pipe protocol", graceful=False)
        if job is not None:
            self._report(failure(job.id, ErrorKind.CRASHED, "ChildProtocolError",
                                 f"the child process running the job (pid {child.pid}) "
                                 f"wrote invalid data to its pipe ({exc}); it was killed "
                                 "and replaced"))

    def _on_pipe_closed(self, child: Child) -> None:
        log.error("child %d of queue %s closed its message pipe but lives on: killing it",
                  child.pid, self.queue)
        job = child.job if child.state is State.BUSY else None
        self._kill(child, "it closed its message pipe", graceful=False)
        if job is not None:
            self._report(failure(job.id, ErrorKind.CRASHED, "ChildProtocolError",
                                 f"the child process running the job (pid {child.pid}) "
                                 "closed its message pipe to the supervisor, so it could "
                                 "not report; it was killed and replaced"))

    def _read_output(self, child: Child, budget: int, final: bool = False) -> None:
        """Turn what the child's fd 1/2 carried into lines of its job. FINAL: the job
        is over, so a last line without its newline is complete too."""
        self._pull_output(child, budget)
        *lines, rest = child.out_buffer.split(b"\n")
        if len(rest) > MAX_OUTPUT_LINE or (final and rest):
            lines.append(rest)
            rest = bytearray()
        child.out_buffer = bytearray(rest)
        for raw in lines:
            self._emit_output(child, raw.decode(errors="replace"))

    def _pull_output(self, child: Child, budget: int) -> None:
        """One read (BUDGET 0), or reads until the pipe is empty or BUDGET bytes came."""
        while True:
            try:
                data = os.read(child.out_fd, pipes.READ_CHUNK)
            except BlockingIOError:
                return
            if not data:
                self._unregister(child.out_fd)  # every writer closed it
                return
            child.out_buffer += data
            budget -= len(data)
            if budget <= 0:
                return

    def _emit_output(self, child: Child, text: str) -> None:
        job = child.job
        if job is not None and child.state is State.BUSY:
            self.log_sink.emit(job.id, self.queue, log_line("info", text, source="output"))
        elif text:
            log.info("child %d of queue %s, no job running: %s", child.pid, self.queue, text)

    def _unregister(self, fd: int) -> None:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    # -- deaths and kills ------------------------------------------------------------
    def _on_exit(self, child: Child) -> None:
        """The child exited: settle what it sent, kill its leftovers, reap, replace."""
        child.exited = True
        if child in self._idle:
            self._idle.remove(child)
        self._read_messages(child, once=False)  # frames it wrote before dying
        self._read_output(child, DRAIN_LIMIT, final=True)
        # its zombie still holds the group id, so the group can't be a stranger's yet
        signal_tree(child, signal.SIGKILL)
        status = reap(child.pid)
        self._forget(child)
        if child.state is State.BUSY and child.job is not None:
            self._on_crash(child, child.job, describe_exit(child.pid, status, self.limits))
        elif child.state is not State.DYING:  # a death we did not cause, between jobs
            log.error("child %d of queue %s died while %s: %s", child.pid, self.queue,
                      child.state.value, child.why or describe_exit(child.pid, status,
                                                                    self.limits))
        if not child.expected:
            self._note_crash()
        self._cond.notify_all()

    def _on_crash(self, child: Child, job: Assigned, how: str) -> None:
        log.error("job %s %s failed after %.0f ms: %s; replacing the child", job.id,
                  job.name, (time.time() - job.started_at) * 1000, how)
        self._report(failure(job.id, ErrorKind.CRASHED, "ChildCrashed",
                             f"{how}; it was replaced"))

    def _note_crash(self) -> None:
        now = time.monotonic()
        delay = self._limiter.record(now)
        if delay:
            self._respawn_at = max(self._respawn_at, now + delay)
            log.error("crash loop in the process pool of queue %s: %d children died in the "
                      "last %.0f s; waiting %.1f s before forking again (check the job "
                      "logs and child_limits)", self.queue, self._limiter.recent(),
                      self._limiter.window_s, delay)

    def _forget(self, child: Child) -> None:
        for fd in (child.msg_fd, child.out_fd, child.pidfd):
            if fd >= 0:
                self._unregister(fd)
        close_fds([child.cmd_fd, child.msg_fd, child.out_fd, child.pidfd])
        self._children.pop(child.pid, None)
        self._nested_calls[child.slot] = 0  # it died, perhaps inside a nested run_job

    def _kill(self, child: Child, why: str, graceful: bool, expected: bool = False) -> None:
        """Stop CHILD and all it started (lock held): SIGTERM then SIGKILL if GRACEFUL."""
        if child in self._idle:
            self._idle.remove(child)
        if child.state is State.BUSY:
            # found before the signal: once it dies, its descendants are init's
            child.doomed = descendants(child.pid)
        child.state, child.why, child.expected = State.DYING, why, expected
        child.job = None
        signal_tree(child, signal.SIGTERM if graceful else signal.SIGKILL)
        child.kill_at = time.monotonic() + KILL_GRACE_S if graceful else None
        self._cond.notify_all()

    def _run_timers(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, pid, job_id = heapq.heappop(self._deadlines)
            child = self._children.get(pid)
            if child and child.state is State.BUSY and child.job and child.job.id == job_id:
                self._expire(child, child.job)
        if len(self._deadlines) > 4 * self.size + 64:  # drop entries of finished jobs
            self._deadlines = [d for d in self._deadlines if self._is_current(d)]
            heapq.heapify(self._deadlines)
        for child in list(self._children.values()):
            if child.kill_at is not None and child.kill_at <= now:
                child.kill_at = None
                signal_tree(child, signal.SIGKILL)
            elif child.eof_at is not None and child.eof_at <= now:
                child.eof_at = None
                if child.state is not State.DYING and not child.exited:
                    self._on_pipe_closed(child)
            elif child.state is State.STARTING and now - child.forked_at > STARTUP_TIMEOUT_S:
                log.error("child %d of queue %s did not start in %.0f s: killing it",
                          child.pid, self.queue, STARTUP_TIMEOUT_S)
                self._kill(child, "it did not start in time", graceful=False)

    def _is_current(self, entry: tuple[float, int, int, str]) -> bool:
        child = self._children.get(entry[2])
        return bool(child and child.job and child.job.id == entry[3])

    def _expire(self, child: Child, job: Assigned) -> None:
        log.warning("job %s %s timed out after %d ms: killing child %d and its processes",
                    job.id, job.name, job.timeout_ms, child.pid)
        self._note_run_time(job)
        self._kill(child, f"job {job.id} timed out", graceful=True, expected=True)
        self._report(timed_out(job.id, job.timeout_ms,
                               f"its child process (pid {child.pid}) and every process it "
                               "started were killed"))

    def _check_memory(self) -> None:
        """Kill a job whose child tree's RSS passed memory_limit_per_child. psutil runs
        without the lock: a tree walk reads /proc and must not hold up job handoffs."""
        limit_mib = self.config.memory_limit_per_child or 0
        with self._lock:
            busy = [(c, c.job) for c in self._children.values()
                    if c.state is State.BUSY and c.job]
        over = [(c, job, rss) for c, job in busy
                if (rss := tree_rss(c.proc)) > limit_mib * MIB]
        with self._lock:
            for child, job, rss in over:
                if child.state is State.BUSY and child.job is job:
                    self._kill_for_memory(child, job, rss, limit_mib)

    def _kill_for_memory(self, child: Child, job: Assigned, rss: int, limit_mib: int) -> None:
        log.error("job %s %s: child %d and its processes use %.0f MiB, over "
                  "memory_limit_per_child=%d MiB: killing them", job.id, job.name, child.pid,
                  rss / MIB, limit_mib)
        self._kill(child, f"job {job.id} passed the memory limit", graceful=False,
                   expected=True)
        self._report(failure(job.id, ErrorKind.MEMORY, "MemoryLimitExceeded",
                             f"the child process running the job (pid {child.pid}) and "
                             f"the processes it started used {rss / MIB:.0f} MiB (RSS), "
                             f"over memory_limit_per_child={limit_mib} MiB; they were "
                             "killed and the child replaced"))

    def _terminate_all(self) -> None:
        """The pool is closing: kill every child and its group, reap them all."""
        with self._lock:
            children = list(self._children.values())
            for child in children:
                self._kill(child, "the pool is closing", graceful=False, expected=True)
            for child in children:
                child.exited = True
                reap(child.pid)
                self._forget(child)
            self._selector.close()
            close_fds([self._wake_r, self._wake_w])
            self._cond.notify_all()
