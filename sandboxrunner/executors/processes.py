"""Process executor: every job runs in a pre-forked child that can really be killed.

One pool per queue, of ``config.effective_concurrency()`` children, each forked by the
supervisor's fork server (forkserver.py) and not by the supervisor. This module is the
Executor protocol and the jobs' side: claimed jobs wait in a backlog for an idle child,
and each is handed over as a RUN frame. The pool (pool.py) keeps the children and its
manager thread does all the waiting, for every child at once:

  fetch thread              manager thread (one per pool, pool.py)      children
  ------------              --------------------------------------      --------
  submit(job) ----- RUN frame on the child's command pipe ---------->  in_child.py:
   (takes an idle child;                                                 runs the
    backlog if none)        selector over, per child:                    handler
                              message pipe  <--- READY, LOG, DONE ----
                              output pipe   <--- fd 1/2 bytes ---------
                              pidfd         <--- it exited
                            plus one wakeup pipe.
                            LOG, output  -> sink.emit (RedisLogSink)
                            DONE         -> report(Settlement) once the pool's
                                            lock is let go (it may write to Redis)
                            exit         -> kill what is left of its group, reap
                                            (through the fork server), fail its job
                                            (CRASHED), ask for a new child
                            timers: deadline -> SIGTERM the group, SIGKILL after
                                    KILL_GRACE_S, report the timeout;
                                    memory samples (psutil) -> kill, report MEMORY

A child that dies, times out or passes a limit no longer counts toward the pool, so its
replacement is asked for at once and the pool is full again while the old group is
still dying (pool_child.py draws a child's states). Children dying faster than
RespawnLimiter allows are replaced after an exponential backoff, not in a fork storm.

Jobs known when the fork server started are in every child's memory; a spec the child
lacks (registered after that, or replaced) is sent once with cloudpickle in the RUN
frame, and the pool remembers that this child now has it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle
import psutil

from ..config import Config
from ..context import LogSink, ProgressSink
from ..errors import UnknownJob
from ..job import Settlement
from ..job_errors import ErrorKind
from ..registry import JobSpec, Registry
from ..store import ClaimedJob
from .base import Report, RunningJob, deadline_after, failure
from .forkserver import ForkServer
from .pipes import encode_run
from .pool import ChildPool
from .pool_child import Assigned, Child

PREFETCH_WAIT_MS = 5.0  # the backlog holds about this much work (see _backlog_limit)
PREFETCH_MAX = 8  # jobs per child in the backlog at most
RUN_TIME_WEIGHT = 0.1  # of the latest job in the running average of run times


class ProcessExecutor:
    def __init__(self, queue: str, registry: Registry, config: Config, report: Report,
                 log_sink: LogSink, make_client: Callable[[], Any] | None = None,
                 fork_server: ForkServer | None = None,
                 progress_sink: ProgressSink | None = None) -> None:
        self.queue = queue
        self.registry = registry
        self.config = config
        self.report = report
        self.size = config.effective_concurrency()
        # a supervisor shares one fork server among its pools; a pool of its own owns one
        self._own_server = fork_server is None
        self.server = fork_server or ForkServer(config, registry, make_client, (queue,))
        self._backlog: deque[tuple[ClaimedJob, JobSpec]] = deque()
        self._blobs: dict[int, tuple[JobSpec, bytes]] = {}
        self._avg_run_ms: float | None = None  # recent run time of a job (sizes the backlog)
        self.pool = ChildPool(queue, config, self.server, report, log_sink, self,
                              progress_sink)

    # -- Executor protocol -----------------------------------------------------------
    def free_slots(self) -> int:
        with self.pool.lock:
            return self._free()

    def wait_for_slot(self, timeout_s: float) -> bool:
        with self.pool.cond:
            if self._free() <= 0:
                self.pool.cond.wait(timeout_s)
            return self._free() > 0

    def admit_inline(self, job: ClaimedJob) -> None:
        return None  # jobs run in the children, never on a supervisor thread

    def jobs_in_hand(self) -> int:
        with self.pool.lock:
            return len(self._backlog) + len(self.pool.busy())

    def submit(self, job: ClaimedJob) -> None:
        try:
            spec = self.registry.get(job.name)
        except UnknownJob as exc:
            self.report(failure(job.id, ErrorKind.INVALID, "UnknownJob",
                                f"this supervisor has no such job: {exc}"))
            return
        with self.pool.lock:
            if self.pool.idle:
                self._start(self.pool.idle.pop(), job, spec)
            else:
                self._backlog.append((job, spec))

    def cancel(self, job_id: str) -> bool:
        with self.pool.lock:
            for claimed in [entry for entry in self._backlog if entry[0].id == job_id]:
                self._backlog.remove(claimed)
                self.pool.report(Settlement.cancelled(job_id, "cancelled before a child "
                                                              "took it"))
                self.pool.wake()
                return True
            return self.pool.cancel_running(job_id)

    def running(self) -> list[RunningJob]:
        with self.pool.lock:
            return [RunningJob(job.id, job.name, self.queue, job.started_at,
                               job.timeout_ms, str(c.pid))
                    for c in self.pool.busy() if (job := c.job) is not None]

    def snapshot(self) -> dict[str, Any]:
        with self.pool.lock:
            rows = [(c.pid, c.state.label, c.job, c.jobs_served, c.proc)
                    for c in self.pool.children.values()]
            backlog, backoff = len(self._backlog), self.pool.respawn_backoff_s()
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
        with self.pool.cond:
            while self.pool.busy() and (left_s := end - time.monotonic()) > 0:
                self.pool.cond.wait(left_s)
            left = [job.id for c in self.pool.busy() if (job := c.job) is not None]
            left += [job.id for job, _ in self._backlog]
            self._backlog.clear()
            self.pool.closed = True  # from now on nothing is reported: those jobs go back
        self.pool.close()
        if self._own_server:
            self.server.close()
        return left

    # -- PoolEvents (lock held) ------------------------------------------------------
    def child_idle(self, child: Child) -> None:
        if self._backlog:
            job, spec = self._backlog.popleft()
            self.pool.idle.remove(child)
            self._start(child, job, spec)

    def job_ran(self, job: Assigned) -> None:
        """Fold how long JOB ran into the recent average that sizes the backlog."""
        ran_ms = max(0.0, time.monotonic() - (job.deadline - job.timeout_ms / 1000)) * 1000
        avg = self._avg_run_ms
        self._avg_run_ms = ran_ms if avg is None else avg + RUN_TIME_WEIGHT * (ran_ms - avg)

    # -- handing jobs to children (lock held) ----------------------------------------
    def _free(self) -> int:
        # Claimed jobs wait in the backlog (up to _backlog_limit), so a child that
        # finishes gets its next job from memory at once, not after a claim round trip to
        # Redis; their deadlines start when a child takes them. While every child is busy
        # and the backlog still holds half of that, no slot is offered, so the fetch
        # thread claims several jobs per round trip instead of one per job.
        limit = self._backlog_limit()
        idle = len(self.pool.idle)
        if not idle and len(self._backlog) * 2 >= limit > 1:
            return 0
        return max(0, idle + limit - len(self._backlog))

    def _backlog_limit(self) -> int:
        """How many claimed jobs may wait for a child: about PREFETCH_WAIT_MS of work at
        the jobs' recent pace, from one per child (long jobs, or none run yet: a job
        waiting here is one another supervisor cannot take) to PREFETCH_MAX per child
        (short jobs: fewer claims and settlements per job)."""
        if self._avg_run_ms is None:
            return self.size
        fit = int(self.size * PREFETCH_WAIT_MS / max(self._avg_run_ms, 0.001))
        return max(self.size, min(self.size * PREFETCH_MAX, fit))

    def _start(self, child: Child, job: ClaimedJob, spec: JobSpec) -> None:
        try:
            blob = None if child.known.get(job.name) is spec else self._pickled(spec)
        except Exception as exc:  # noqa: BLE001 - cloudpickle raises many kinds
            self.pool.idle.append(child)
            self.pool.report(failure(job.id, ErrorKind.INVALID, "UnpicklableJob",
                                     f"job {job.name!r} cannot be sent to a child process: "
                                     f"cloudpickle failed: {exc}"))
            self.pool.wake()  # the manager thread reports it once the lock is let go
            return
        assigned = Assigned(job.id, job.name, job.timeout_ms,
                            deadline_after(job.timeout_ms), time.time())
        if not self.pool.start_job(child, assigned, encode_run(job, blob)):
            self._backlog.appendleft((job, spec))  # it never started: another child's
            return
        child.known[job.name] = spec

    def _pickled(self, spec: JobSpec) -> bytes:
        cached = self._blobs.get(id(spec))
        if cached is None or cached[0] is not spec:
            cached = self._blobs[id(spec)] = (spec, cloudpickle.dumps(spec))
        return cached[1]
