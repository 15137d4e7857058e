"""Thread-mode executor: jobs run on threads of the supervisor process.

Sync handlers run on a pool of threads kept for reuse while work keeps coming; async
handlers run on one event loop thread shared by the executor and take no thread of their
own. A watchdog thread enforces deadlines, and grows the pool when it stalls.

The pool grows by stalls, not by claims. A job goes to an idle thread if there is one.
Else (the pool has threads) it waits in the pool's queue for the next thread to become
free (a thread counts as free once its handler returned, while it still writes the
outcome), unless the pool stalls: no thread became free and none was started for STALL_S,
while threads are held inside handlers (blocking on I/O, sleeping, computing) for STALL_S
or more. Then the watchdog starts a thread per held thread (as many as wait, at most): the
pool doubles every STALL_S while the stall lasts. A claim of 200 short jobs thus runs on
the few threads that keep freeing up (starting a thread for every job no thread was free
to take grew the pool to about 200 threads on a deep queue of no-ops, their stacks in the
supervisor's RSS), while jobs that block get a thread each within a few STALL_S (100 in
about 0.15 s). A job that comes while every thread is busy and one freed within STALL_S
may wait up to STALL_S for a thread.

A supervisor's fetch thread may also run a sync job itself (``admit_inline``): it then
hands its fetching over to a stand-by fetch thread, which saves the job a thread
hand-off (see supervisor.py). Such a job takes a slot and is watched like any other.

A thread cannot be killed. At its deadline a job is reported failed with a timeout and
its slot is freed; the thread runs on in the background and whatever it returns later is
discarded (the job already left the lease). Use ``--separate-process`` for a hard kill.

While the executor runs, what a job prints becomes its log lines (joboutput.py): each
job gets a `JobOutput` in its context, closed when its handler returns (before its
outcome is reported; a timed-out job's thread keeps writing to its log until then, as
its ``ctx.log`` does).
"""

from __future__ import annotations

import asyncio
import logging
import queue as queue_mod
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..context import JobContext, JobLogger, LogSink, ProgressSink, current_job
from ..job import ClaimedJob, Settlement
from ..joboutput import JobOutput, capture_job_output, release_job_output
from ..registry import Registry
from .base import MakeClient, Report, RunningJob, deadline_after, resolve, timed_out

log = logging.getLogger(__name__)

IDLE_THREAD_EXIT_S = 60.0
# no thread freed or started for this long: the pool grows. Four GIL switch intervals
# (5 ms): at 5 ms, threads waiting for the GIL behind a claim's decoding looked stalled
# and a deep queue of no-ops grew the pool to 199 threads again; at 20 ms it kept 3-5
STALL_S = 0.02
WATCH_IDLE_S = 1.0
LOOP_CLOSE_S = 1.0  # closing the event loop's connections at a stop takes at most this


class Slots:
    """Counts busy slots of one queue; lets a nested run_job see if it would deadlock."""

    def __init__(self, queue: str, capacity: int) -> None:
        self.queue = queue
        self.capacity = capacity
        self.busy = 0
        self.nested_waiting = 0
        self.cond = threading.Condition()

    def take(self) -> None:
        with self.cond:
            self.busy += 1

    def give(self) -> None:
        with self.cond:
            self.busy -= 1
            self.cond.notify_all()

    def free(self) -> int:
        return self.capacity - self.busy

    def waiting_nested(self) -> int:
        with self.cond:
            return self.nested_waiting

    def enter_nested(self) -> None:
        with self.cond:
            self.nested_waiting += 1

    def leave_nested(self) -> None:
        with self.cond:
            self.nested_waiting -= 1


class ThreadExecutor:
    def __init__(self, queue: str, registry: Registry, concurrency: int, report: Report,
                 log_sink: LogSink, make_client: MakeClient | None = None,
                 progress_sink: ProgressSink | None = None) -> None:
        self.queue = queue
        self.progress_sink = progress_sink
        self.registry = registry
        self.report = report
        self.log_sink = log_sink
        self.make_client = make_client  # in each job's context, for a nested run_job
        self.slots = Slots(queue, concurrency)
        self._lock = threading.Lock()
        self._running: dict[str, RunningJob] = {}
        self._stoppers: dict[str, Callable[[], None]] = {}  # how to cancel each job
        # one FIFO of (deadline, id) per distinct timeout: deadlines in each are ascending,
        # so the watchdog looks at a few heads instead of a heap holding every job
        self._deadlines: dict[int, deque[tuple[float, str]]] = {}
        self._next_wake = float("inf")
        self._tasks: queue_mod.SimpleQueue[Any] = queue_mod.SimpleQueue()
        self._idle_threads = 0
        self._threads = 0
        self._waiting = 0  # jobs in _tasks that no idle thread was reserved for
        self._last_change = 0.0  # when a thread last became free or was started
        # thread ident -> when its handler was called (monotonic), while it runs one
        self._in_handler: dict[int, float] = {}
        self._stopping = threading.Event()
        self._watch_cond = threading.Condition(self._lock)
        capture_job_output()  # released by shutdown
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever,
                                             name=f"sr-{queue}-asyncio", daemon=True)
        self._loop_thread.start()
        self._watchdog = threading.Thread(target=self._watch, name=f"sr-{queue}-watchdog",
                                          daemon=True)
        self._watchdog.start()

    # -- Executor protocol -----------------------------------------------------------
    def free_slots(self) -> int:
        return self.slots.free()

    def wait_for_slot(self, timeout_s: float) -> bool:
        with self.slots.cond:
            if self.slots.free() <= 0:
                self.slots.cond.wait(timeout_s)
            return self.slots.free() > 0

    def submit(self, job: ClaimedJob) -> None:
        resolved = resolve(job, self.registry)
        if not isinstance(resolved, tuple):
            self.report(resolved)
            return
        spec, data = resolved
        ctx = self._admit(job, data)
        if spec.is_async:
            coro = self._run_async(spec, data, ctx)
            asyncio.run_coroutine_threadsafe(coro, self._loop)
        else:
            self._start_thread_task((spec, data, ctx))

    def admit_inline(self, job: ClaimedJob) -> Callable[[], None] | None:
        """Admit a sync job to run on the calling thread: its slot is taken and its
        deadline watched from now; the returned call runs it and reports its outcome.
        None: the job goes through ``submit`` (async handler, or refused)."""
        resolved = resolve(job, self.registry)
        if not isinstance(resolved, tuple) or resolved[0].is_async:
            return None
        spec, data = resolved
        ctx = self._admit(job, data)
        return lambda: self._finish(job.id, self._call_sync(spec, data, ctx))

    def _admit(self, job: ClaimedJob, data: Any) -> JobContext:
        """Take a slot for JOB and watch its deadline; its context for the handler."""
        record = job.record(self.queue, data)
        ctx = JobContext(job=record, log=JobLogger(self.log_sink, job.id, self.queue),
                         slots=self.slots, output=JobOutput(self.log_sink, job.id, self.queue),
                         make_client=self.make_client, progress_sink=self.progress_sink)
        with self._lock:
            self._running[job.id] = RunningJob(job.id, job.name, self.queue, time.time(),
                                               job.timeout_ms, "thread")
            # the event is made only if a cancel comes (or the handler looks at it)
            self._stoppers[job.id] = lambda: ctx.cancelled.set()
            deadline = deadline_after(job.timeout_ms)
            self._deadlines.setdefault(job.timeout_ms, deque()).append((deadline, job.id))
            if deadline < self._next_wake:  # wake the watchdog only if it sleeps too long
                self._watch_cond.notify()
        self.slots.take()
        return ctx

    def jobs_in_hand(self) -> int:
        return self.slots.busy

    def cancel(self, job_id: str) -> bool:
        """A thread cannot be stopped: its ctx.cancelled is set (an async handler's task is
        cancelled too), and the job settles as cancelled when the handler returns."""
        with self._lock:
            stop = self._stoppers.get(job_id)
        if stop is not None:
            log.warning("job %s cancelled: ctx.cancelled set; it settles when its handler "
                        "returns", job_id)
            stop()
        return stop is not None

    def running(self) -> list[RunningJob]:
        with self._lock:
            return list(self._running.values())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"threads": self._threads, "idle_threads": self._idle_threads,
                    "running": len(self._running), "capacity": self.slots.capacity}

    def shutdown(self, grace_ms: int) -> list[str]:
        end = time.monotonic() + grace_ms / 1000
        with self.slots.cond:
            while self.slots.busy > 0 and time.monotonic() < end:
                self.slots.cond.wait(min(0.1, max(0.0, end - time.monotonic())))
        self._stopping.set()
        with self._lock:
            self._watch_cond.notify()
            left = list(self._running)
        for _ in range(self._threads):
            self._tasks.put(None)
        asyncio.run_coroutine_threadsafe(self._close_loop(), self._loop)
        self._loop_thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
        release_job_output()
        return left

    # -- internals -------------------------------------------------------------------
    async def _close_loop(self) -> None:
        """Stop the event loop, once the connections nested arun_job calls of its jobs
        opened on it are closed (they belong to the loop)."""
        try:
            if self.make_client is not None:
                await asyncio.wait_for(self.make_client.aclose(), LOOP_CLOSE_S)
        except Exception:  # noqa: BLE001 - stopping goes on; the connections are dropped
            log.debug("could not close the connections of %s's event loop", self.queue,
                      exc_info=True)
        finally:
            asyncio.get_running_loop().stop()

    def _start_thread_task(self, task: Any) -> None:
        now = time.monotonic()
        spawn = False
        with self._lock:
            if self._idle_threads > 0:
                self._idle_threads -= 1
            elif self._threads == 0:
                spawn = True
                self._threads += 1
                self._last_change = now
            else:  # the next thread to become free takes it, unless the pool stalls
                self._waiting += 1
                if self._next_wake > max(now, self._last_change + STALL_S):
                    self._watch_cond.notify()  # it sleeps past the stall it should see
        self._tasks.put(task)
        if spawn:
            self._spawn(1)

    def _spawn(self, count: int) -> None:
        for _ in range(count):
            threading.Thread(target=self._thread_main, name=f"sr-{self.queue}-job",
                             daemon=True).start()

    def _grow_if_stalled(self, now: float) -> int:
        """Under the lock: the threads to start for jobs waiting through a stall (see the
        module's docstring), counted as started."""
        if self._waiting == 0 or now - self._last_change < STALL_S:
            return 0
        # only threads held inside a handler for STALL_S count: threads between jobs that
        # wait for the GIL or a core (a loaded machine) would only be joined by more
        # waiting threads, and that kind of stall grew the pool to its concurrency
        stuck = sum(1 for called in list(self._in_handler.values()) if now - called >= STALL_S)
        count = min(self._waiting, stuck)
        self._waiting -= count
        self._threads += count
        self._last_change = now
        return count

    def _thread_main(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=IDLE_THREAD_EXIT_S)
            except queue_mod.Empty:
                with self._lock:
                    if self._idle_threads > 0:
                        self._idle_threads -= 1
                        self._threads -= 1
                        return
                continue
            if task is None:
                return
            spec, data, ctx = task
            outcome = self._call_sync(spec, data, ctx)
            # free for the next job before writing this one's outcome (the slot frees
            # there, and the fetcher hands a job over at once): that job waits for one
            # write instead of starting a thread, so a flood of short jobs keeps the pool
            # (and the supervisor's RSS) small; a job that blocks still gets a thread each
            with self._lock:
                self._last_change = time.monotonic()
                if self._waiting > 0:
                    self._waiting -= 1  # takes a waiting job next
                else:
                    self._idle_threads += 1
            self._finish(ctx.job.id, outcome)

    def _call_sync(self, spec: Any, data: Any, ctx: JobContext) -> Settlement:
        token = current_job.set(ctx)
        thread = threading.get_ident()
        self._in_handler[thread] = time.monotonic()  # one dict store: no lock needed
        try:
            return Settlement.returned(ctx.job.id, spec.call(data, ctx))
        except BaseException as exc:  # noqa: BLE001 - a job's failure, reported to its caller
            return Settlement.raised(ctx.job.id, exc)
        finally:
            self._in_handler.pop(thread, None)
            current_job.reset(token)
            ctx.output.close()  # its last partial lines, before its outcome is written

    async def _run_async(self, spec: Any, data: Any, ctx: JobContext) -> None:
        task, loop = asyncio.current_task(), asyncio.get_running_loop()

        def stop() -> None:
            ctx.cancelled.set()
            if task is not None:
                loop.call_soon_threadsafe(task.cancel)

        with self._lock:
            if ctx.job.id in self._stoppers:  # not already ended (timed out)
                self._stoppers[ctx.job.id] = stop
        token = current_job.set(ctx)
        try:
            outcome = Settlement.returned(ctx.job.id, await spec.call(data, ctx))
        except BaseException as exc:  # noqa: BLE001
            outcome = Settlement.raised(ctx.job.id, exc)
        finally:
            current_job.reset(token)
            ctx.output.close()
        self._finish(ctx.job.id, outcome)

    def _finish(self, job_id: str, outcome: Settlement) -> None:
        with self._lock:
            entry = self._running.pop(job_id, None)
            self._stoppers.pop(job_id, None)
            if entry is not None:
                self._drop_settled_heads(entry.timeout_ms)
        if entry is None:
            return  # timed out earlier: its late outcome is discarded
        self.slots.give()
        self.report(outcome)

    def _drop_settled_heads(self, timeout_ms: int) -> None:
        """Forget deadlines of jobs that already finished (jobs mostly finish in order)."""
        fifo = self._deadlines.get(timeout_ms)
        while fifo and fifo[0][1] not in self._running:
            fifo.popleft()

    def _watch(self) -> None:
        with self._lock:
            while not self._stopping.is_set():
                now = time.monotonic()
                expired = []
                for fifo in self._deadlines.values():
                    while fifo and fifo[0][0] <= now:
                        job_id = fifo.popleft()[1]
                        entry = self._running.pop(job_id, None)
                        if entry is not None:
                            expired.append(entry)
                            self._stoppers.pop(job_id, None)
                    while fifo and fifo[0][1] not in self._running:
                        fifo.popleft()
                grow = self._grow_if_stalled(now)
                if expired or grow:
                    self._lock.release()
                    try:
                        self._spawn(grow)
                        for entry in expired:
                            self._expire(entry)
                    finally:
                        self._lock.acquire()
                    continue
                # never asleep longer than WATCH_IDLE_S: a job due later than that does
                # not have to wake the watchdog (a thread wake-up costs a lone job's
                # caller more than a wake-up a second costs an idle supervisor)
                heads = [fifo[0][0] for fifo in self._deadlines.values() if fifo]
                self._next_wake = min(heads, default=now + WATCH_IDLE_S)
                self._next_wake = min(self._next_wake, now + WATCH_IDLE_S)
                if self._waiting > 0:  # look again once the pool would count as stalled
                    self._next_wake = min(self._next_wake, self._last_change + STALL_S)
                self._watch_cond.wait(self._next_wake - now)
                self._next_wake = 0.0  # awake: nobody needs to notify

    def _expire(self, entry: RunningJob) -> None:
        log.warning("job %s %s timed out after %d ms (thread keeps running, result discarded)",
                    entry.id, entry.name, entry.timeout_ms)
        self.slots.give()
        self.report(timed_out(entry.id, entry.timeout_ms,
                              "thread mode cannot kill the thread: it may still be running, "
                              "and its result will be discarded"))
