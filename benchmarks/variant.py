"""The interface every measured system implements, and the timeout-recovery probe.

A `Variant` is one system in one configuration ("celery prefork", "huey threads"). The
harness starts it, runs the measurements it supports and stops it. Its workers always
run in separate processes; the client runs in the benchmark process.

Timeout recovery (`measure_timeout`) is the same procedure for every system that has a
hard per-job time limit: the timed-out job writes its start time and pid to Redis
(`benchmarks.marks`), a no-op "stamp" job queued behind it writes when it ran, and a
watcher thread samples the worker's process tree every 2 ms to see when the job's
process is gone and the pool is back to its size.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import marks
from benchmarks.harness import Latency, Throughput, TimeoutRun, Unavailable

THREADS = "threads"  # one worker process, concurrency inside it (threads or asyncio)
PROCESSES = "processes"  # two worker processes (prefork-like), one per core
TIMEOUT_LIMIT_S = 1.0


def payload(i: int) -> dict[str, Any]:
    """The small dict every no-op job gets and must return."""
    return {"i": i, "tag": "noop"}


class Variant:
    system = ""
    label = ""
    mode = THREADS
    workers = ""  # how its workers are started, as shown in the output
    wait_method = ""  # how the client waits for results, as shown in the output
    pipelined_method = ""  # sandboxrunner only: its own pipelined client (measure.py)

    def start(self, url: str, logdir: Path) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    sync_client = True  # has a synchronous enqueue: the "one client" and "8 threads" patterns
    async_client = False  # has an asyncio client: the "asyncio" pattern (patterns.py)

    def submit(self, i: int) -> Any:
        """One synchronous enqueue of the no-op with payload(i), as a user calls it; a handle."""
        raise NotImplementedError

    def collect(self, handles: list[tuple[int, Any]], deadline: float) -> tuple[int, int]:
        """Wait for the results of HANDLES ((i, handle) pairs) within DEADLINE, the system's
        own best way: how many were seen, and how many of those differ from payload(i)."""
        raise NotImplementedError

    async def asubmit(self, i: int) -> Any:
        """The asyncio twin of `submit`."""
        raise NotImplementedError

    async def acollect(self, handles: list[tuple[int, Any]], deadline: float) -> tuple[int, int]:
        """The asyncio twin of `collect`."""
        raise NotImplementedError

    def run_async(self, coro: Any) -> Any:
        """Run COROUTINE where this variant's asyncio client lives (by default a new loop)."""
        return asyncio.run(coro)

    def throughput(self, n: int, deadline: float) -> Throughput:
        """N no-ops from one client (patterns.py; asyncio for a system with no synchronous
        client), for the sections that need one figure (scale, before/after)."""
        from benchmarks.patterns import ASYNCIO, ONE_CLIENT, run_pattern

        run = run_pattern(self, ONE_CLIENT if self.sync_client else ASYNCIO, n, deadline)
        return Throughput(run.n, run.seen, run.elapsed_s, run.wrong)

    def roundtrip(self, calls: int, warmup: int, deadline: float) -> Latency:
        raise NotImplementedError

    def worker_pids(self) -> list[int]:
        """The worker processes (each with its descendants) whose CPU is counted."""
        return []

    def describe(self) -> dict[str, str]:
        return {"system": self.system, "variant": self.label, "mode": self.mode,
                "workers": self.workers, "wait_method": self.wait_method}


class TimeoutTarget:
    """A system started for the timeout probe: process mode, concurrency 1, 1 s limit."""

    system = ""
    label = ""
    how = ""  # how the time limit is set and enforced, as shown in the output

    def start(self, url: str, logdir: Path) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def root_pid(self) -> int:
        """The worker process whose descendants form the pool."""
        raise NotImplementedError

    def submit(self, kind: str) -> Any:
        """Enqueue the timed-out job of KIND ("sleep" or "c_call"); return a handle."""
        raise NotImplementedError

    def wait_outcome(self, handle: Any, timeout_s: float) -> tuple[bool, str]:
        """Block until the caller learns the job's outcome: (it failed, a description)."""
        raise NotImplementedError

    def submit_stamp(self) -> None:
        """Enqueue the no-op that records when it runs."""
        raise NotImplementedError


def run_roundtrips(call: Any, calls: int, warmup: int, deadline: float) -> Latency:
    """Time `call(i)` sequentially after `warmup` untimed calls, within the deadline; the
    warm-up gets at most a third of the time, so slow systems still get timed calls."""
    warm_until = time.monotonic() + (deadline - time.monotonic()) / 3
    for i in range(warmup):
        if time.monotonic() >= warm_until:
            break
        call(-1 - i)
    latency = Latency(wanted=calls)
    for i in range(calls):
        if time.monotonic() >= deadline:
            break
        start = time.perf_counter()
        call(i)
        latency.samples_s.append(time.perf_counter() - start)
    return latency


# --------------------------------------------------------------------------- timeouts


def _descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class _TreeWatcher(threading.Thread):
    """Samples the pool every 2 ms: when the job's pid died, when the pool was full again."""

    def __init__(self, root: int, baseline: int, job_pid: int, stop: threading.Event) -> None:
        super().__init__(name="bench-tree-watcher", daemon=True)
        self.root, self.baseline, self.job_pid, self.stop_event = root, baseline, job_pid, stop
        self.dead_at: float | None = None
        self.full_at: float | None = None

    def run(self) -> None:
        while not self.stop_event.is_set() and self.full_at is None:
            now = time.time()
            if self.dead_at is None and not _pid_alive(self.job_pid):
                self.dead_at = now
            if self.dead_at is not None:
                pool = [p for p in _descendants(self.root) if p != self.job_pid]
                if len(pool) >= self.baseline:
                    self.full_at = now
            time.sleep(0.002)


class _CallerWait(threading.Thread):
    """Waits on its own thread for what the caller is told about the timed-out job."""

    def __init__(self, target: TimeoutTarget, handle: Any, timeout_s: float) -> None:
        super().__init__(name="bench-timeout-waiter", daemon=True)
        self.target, self.handle, self.timeout_s = target, handle, timeout_s
        self.failed = False
        self.text: str | None = None
        self.at: float | None = None

    def run(self) -> None:
        try:
            self.failed, self.text = self.target.wait_outcome(self.handle, self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - recorded as the outcome
            self.text = f"error: {type(exc).__name__}: {exc}"
        self.at = time.time()


def measure_timeout(target: TimeoutTarget, kind: str, budget_s: float) -> TimeoutRun:
    """One timed-out job of KIND with a no-op behind it, watched for budget_s past its deadline."""
    marks.reset()
    root = target.root_pid()
    baseline = len(_descendants(root))
    caller = _CallerWait(target, target.submit(kind), TIMEOUT_LIMIT_S + budget_s + 5)
    target.submit_stamp()
    caller.start()
    started = marks.wait_start(timeout_s=30)
    if started is None:
        raise Unavailable("the timed-out job never started")
    start_t, job_pid = started
    deadline_t = start_t + TIMEOUT_LIMIT_S
    stop = threading.Event()
    watcher = _TreeWatcher(root, baseline, job_pid, stop)
    watcher.start()
    try:
        stamp_t = _wait_recovery(caller, watcher, job_pid, deadline_t + budget_s)
    finally:
        stop.set()
        watcher.join(timeout=1)
    return _timeout_run(kind, deadline_t, budget_s, caller, watcher, stamp_t)


def _wait_recovery(caller: _CallerWait, watcher: _TreeWatcher, job_pid: int,
                   until_t: float) -> float | None:
    """Poll until the caller has its answer, the next job ran and the pool is whole (or the
    job's process lives on), or until epoch time until_t; the next job's run time."""
    stamp_t: float | None = None
    while time.time() < until_t:
        stamp_t = stamp_t or marks.read_stamp()
        settled = watcher.full_at is not None or _pid_alive(job_pid)
        if stamp_t is not None and caller.at is not None and settled:
            return stamp_t
        time.sleep(0.005)
    return stamp_t or marks.read_stamp()


def _timeout_run(kind: str, deadline_t: float, budget_s: float, caller: _CallerWait,
                 watcher: _TreeWatcher, stamp_t: float | None) -> TimeoutRun:
    def after(t: float | None) -> float | None:
        return None if t is None or t - deadline_t > budget_s else round(t - deadline_t, 4)

    gone = watcher.dead_at is not None and watcher.dead_at - deadline_t <= budget_s
    # a job interrupted without ending its process: the pool was whole again once the
    # next job could run in that process
    full_t = watcher.full_at if gone else stamp_t
    text = caller.text or f"no answer within {budget_s:g} s"
    if caller.at is not None and not caller.failed:
        text += f" ({caller.at - deadline_t:.1f} s after the deadline)"
    return TimeoutRun(kind=kind, failed_after_s=after(caller.at if caller.failed else None),
                      pool_full_after_s=after(full_t), next_ran_after_s=after(stamp_t),
                      outcome=text, process_gone=gone)
