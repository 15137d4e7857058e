"""The supervisor: claims jobs from Redis, runs them on an executor, settles them.

Threads of one supervisor process:

  fetch-<queue>   per queue served, one thread holds the fetch role at a time. While the
                  executor has free slots it claims up to that many jobs in one script
                  call; when the queue is empty it blocks on BLMOVE (its own connection)
                  instead of polling, with the claim of the job it moves pipelined behind
                  it (one round trip). In thread mode it may keep the last job of a claim
                  and run it itself (no hand-over to a job thread: a single waiting caller
                  gets its result sooner), leaving the role to one of FETCH_STANDBY
                  stand-by fetch threads; it takes a slot like any job and stands by once
                  done. In process mode a single fetch thread hands every job to a child.
                  Claimed ids sit in the supervisor's active list (its lease) until
                  settled. After a Redis error it compares that list with the jobs it
                  holds: an id there that never reached it (the claim's reply was lost
                  with the connection) is claimed again, so a lost reply cannot strand a
                  job in a live lease.
  settle          takes outcomes reported by the executors and writes them in batches
                  (one finish script per queue per batch), which also notifies callers.
  heartbeat       every heartbeat_ms renews the lease on each queue (its own connection,
                  so slow job traffic never lets a live lease lapse), takes back the jobs
                  of supervisors whose lease lapsed, and publishes a snapshot for `top`.
  cron            fires the due ticks of the served queues' cron jobs (see cron.py).

Redis outages: every thread retries with backoff until Redis answers again; outcomes
wait in memory meanwhile and are written once it is back, never dropped. A job is run at
least once: if this supervisor's lease lapses (it stopped heartbeating for lease_ms while
Redis was reachable), its jobs run again elsewhere and its late outcomes are dropped. A
Redis outage or stall itself never lapses a lease (see heartbeat.lua).

Shutdown (SIGINT/SIGTERM): stop claiming, let running jobs finish for up to grace_period
ms, settle what finished, hand the jobs still running back to the queue, remove the
supervisor's records, return.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import psutil
import redis

from .config import Config
from .context import LogSink
from .cron import CronScheduler
from .executors.base import Executor, failure
from .executors.threads import ThreadExecutor
from .job import ErrorKind
from .joblog import RedisLogSink
from .registry import Registry
from .store import BLOCK_TIMEOUT_S, ClaimedJob, Settlement, Store

log = logging.getLogger(__name__)

SETTLE_BATCH_MAX = 500
FETCH_STANDBY = 2  # thread mode: fetch threads per queue waiting to take over fetching
ROLE_WAIT_S = 1.0  # a stand-by fetch thread looks at the stop flag this often
FETCH_BACKOFF_MIN_S = 0.05
CLAIM_BATCH_MAX = 200
RETRY_BACKOFF_MAX_S = 2.0
MIN_BLOCK_S = 0.01


def new_supervisor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Supervisor:
    def __init__(self, config: Config, registry: Registry, url: str) -> None:
        self.config = config
        self.registry = registry
        self.url = url
        self.sid = new_supervisor_id()
        self.queues = tuple(config.workers)
        self.started_at = time.time()
        self._stop = threading.Event()
        # the heartbeat outlives fetching: a draining supervisor still holds its lease
        self._beat_stop = threading.Event()
        self._settle_queue: queue_mod.SimpleQueue[tuple[str, Settlement] | None] = (
            queue_mod.SimpleQueue())
        self._settle_lock = threading.Lock()  # held by whoever writes outcomes
        self._store = Store(config, url)  # fetch + settle
        self._beat_store = Store(config, url)  # heartbeat: never waits behind job traffic
        self.log_sink = RedisLogSink(self._store.redis, self._store.keys,
                                     config.log_max_lines, config.result_ttl)
        self.executors: dict[str, Executor] = {
            q: self._make_executor(q, self.log_sink) for q in self.queues
        }
        self._threads: list[threading.Thread] = []
        # ids each queue's executor was handed and whose outcome is not written yet
        self._held: dict[str, set[str]] = {q: set() for q in self.queues}
        self._held_lock = threading.Lock()
        # per queue, from the last claim: it left the queue empty (so the fetch loop
        # blocks on BLMOVE without another claim first), and when the next retry is due
        self._drained: dict[str, bool] = {q: False for q in self.queues}
        self._retry_due_at: dict[str, float | None] = {q: None for q in self.queues}
        # the fetch role of each queue passes between its fetch threads (see _fetch_loop);
        # whoever holds it owns the fetch state above and below
        self._fetch_role = {q: threading.Lock() for q in self.queues}
        self._standby_lock = threading.Lock()
        self._standby = {q: 0 for q in self.queues}  # fetch threads waiting for the role
        self._fetch_backoff = {q: FETCH_BACKOFF_MIN_S for q in self.queues}
        self._reconcile_due = {q: False for q in self.queues}
        # cron: ticks of the served queues' cron jobs, once across all supervisors
        self.cron = CronScheduler(config, registry, url, self.sid, self.queues)
        self._process = psutil.Process()

    def _make_executor(self, queue: str, sink: LogSink) -> Executor:
        report = self._reporter(queue)
        if self.config.use_separate_process:
            from .executors.processes import ProcessExecutor

            # the url lets a child build its own client for a nested run_job
            return ProcessExecutor(queue, self.registry, self.config, report, sink,
                                   redis_url=self.url)
        return ThreadExecutor(queue, self.registry, self.config.effective_concurrency(),
                              report, sink)

    def _reporter(self, queue: str) -> Any:
        def report(outcome: Settlement) -> None:
            # a lone job's outcome is written by the reporting thread itself: a hand-over
            # to the settle thread costs its caller more than the write. With other jobs
            # in hand the settle thread batches (one script for many), and the reporting
            # thread goes on serving them instead of waiting for Redis.
            if (self._settle_queue.empty() and self.executors[queue].jobs_in_hand() == 0
                    and self._settle_lock.acquire(blocking=False)):
                try:
                    if self._write_once(queue, outcome):
                        return
                finally:
                    self._settle_lock.release()
            self._settle_queue.put((queue, outcome))

        return report

    @property
    def mode(self) -> str:
        return "processes" if self.config.use_separate_process else "threads"

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        # schedules are in Redis before the supervisor is seen alive (tests and operators
        # read "heartbeating" as "ready")
        self.cron.sync()
        self._heartbeat_once()
        self.cron.start()
        # thread mode: stand-by fetch threads let the fetching one run a job itself
        fetchers = 1 if self.config.use_separate_process else 1 + FETCH_STANDBY
        targets: list[tuple[str, Callable[..., None], tuple[str, ...]]] = [
            (f"fetch-{q}", self._fetch_loop, (q,)) for q in self.queues
            for _ in range(fetchers)]
        targets += [("settle", self._settle_loop, ()), ("heartbeat", self._heartbeat_loop, ())]
        for name, target, args in targets:
            thread = threading.Thread(target=target, args=args, name=f"sr-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("supervisor %s started: queues %s, %s mode, concurrency %d", self.sid,
                 ",".join(self.queues), self.mode, self.config.effective_concurrency())

    def stop(self, grace_ms: int | None = None) -> None:
        """Drain and stop; safe to call more than once."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.cron.stop()
        grace = self.config.grace_period if grace_ms is None else grace_ms
        for role in self._fetch_role.values():
            role.acquire()  # kept: once the current fetch is over, none starts again
        leftovers = {q: ex.shutdown(grace) for q, ex in self.executors.items()}
        self._settle_queue.put(None)
        for thread in self._threads:
            if thread.name == "sr-settle":
                thread.join()
        self._beat_stop.set()
        for thread in self._threads:
            if thread.name == "sr-heartbeat":
                thread.join()
        self.log_sink.close()
        for queue, ids in leftovers.items():
            if ids:
                log.warning("grace period over: handing %d running job(s) of %s back",
                            len(ids), queue)
        try:
            for queue in self.queues:
                self._store.release_lease(queue, self.sid)
            self._store.remove_supervisor(self.sid)
        except redis.RedisError as exc:
            log.warning("could not remove supervisor records (they expire): %s", exc)
        self._store.close()
        self._beat_store.close()
        log.info("supervisor %s stopped", self.sid)

    def run_until_signal(self) -> None:
        """Start, serve until SIGINT/SIGTERM, then drain and stop (main thread only)."""
        stop_requested = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("received %s: draining", signal.Signals(signum).name)
            stop_requested.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not stop_requested.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- fetch -----------------------------------------------------------------------
    def _fetch_loop(self, queue: str) -> None:
        """One fetch thread of QUEUE: wait for the fetch role, fetch until a job is to run
        on this thread, hand the role on to a stand-by thread, run the job, wait again."""
        role = self._fetch_role[queue]
        while not self._stop.is_set():
            with self._standby_lock:
                self._standby[queue] += 1
            got = role.acquire(timeout=ROLE_WAIT_S)
            with self._standby_lock:
                self._standby[queue] -= 1
            if not got:
                continue
            run_here = None
            try:
                while run_here is None and not self._stop.is_set():
                    run_here = self._fetch_turn(queue)
            finally:
                role.release()
            if run_here is not None:
                try:
                    run_here()
                except Exception:  # noqa: BLE001 - a fetch thread must outlive any one job
                    log.exception("unexpected error running a job of %s; carrying on", queue)

    def _fetch_turn(self, queue: str) -> Callable[[], None] | None:
        """Fetch once, riding out Redis errors; a job to run on this thread, if any."""
        executor = self.executors[queue]
        try:
            if self._reconcile_due[queue]:
                self._reconcile(queue, executor)
                self._reconcile_due[queue] = False
            run_here = self._fetch_once(queue, executor)
            self._fetch_backoff[queue] = FETCH_BACKOFF_MIN_S
            return run_here
        except redis.RedisError as exc:
            log.warning("fetch from %s failed (%s); retrying in %.2fs", queue, exc,
                        self._fetch_backoff[queue])
        except Exception:  # noqa: BLE001 - this thread must outlive any one bad job
            log.exception("unexpected error fetching from %s; carrying on", queue)
        self._reconcile_due[queue] = True  # a claim may have run with its reply lost
        self._drained[queue] = False
        self._stop.wait(self._fetch_backoff[queue])
        self._fetch_backoff[queue] = min(self._fetch_backoff[queue] * 2, RETRY_BACKOFF_MAX_S)
        return None

    def _reconcile(self, queue: str, executor: Executor) -> None:
        """Claim again the ids in this supervisor's lease that never reached it."""
        with self._held_lock:
            held = set(self._held[queue])  # before reading the lease: see _write_settlements
        lost = [i for i in dict.fromkeys(self._store.lease_ids(queue, self.sid))
                if i not in held]
        if not lost:
            return
        log.warning("%d job(s) of %s sat in this supervisor's lease without reaching it (a "
                    "reply lost with its connection); claiming them again", len(lost), queue)
        jobs, _ = self._store.claim(queue, self.sid, 0, lost)
        self._submit(queue, executor, jobs, inline=False)

    def _fetch_once(self, queue: str, executor: Executor) -> Callable[[], None] | None:
        free = executor.free_slots()
        if free <= 0:
            executor.wait_for_slot(0.5)
            return None
        count = min(free, CLAIM_BATCH_MAX)
        due_at = self._retry_due_at[queue]
        if not self._drained[queue] or (due_at is not None and due_at <= time.monotonic()):
            jobs, next_retry_ms = self._store.claim(queue, self.sid, count)
            self._note_claim(queue, len(jobs), count, next_retry_ms)
            if jobs:
                return self._submit(queue, executor, jobs)
            if next_retry_ms == 0:
                return None  # a retry is due right now: the next claim moves it
        # the queue was empty at the last claim: block instead of claiming again first
        block_s = BLOCK_TIMEOUT_S
        due_at = self._retry_due_at[queue]
        if due_at is not None:
            block_s = min(block_s, max(due_at - time.monotonic(), MIN_BLOCK_S))
        jobs, next_retry_ms = self._store.wait_and_claim(queue, self.sid, count, block_s)
        self._note_claim(queue, len(jobs), count, next_retry_ms)
        return self._submit(queue, executor, jobs)

    def _note_claim(self, queue: str, got: int, count: int, next_retry_ms: int) -> None:
        """Remember whether a claim emptied the queue, and when the next retry is due."""
        self._drained[queue] = got < count
        self._retry_due_at[queue] = (None if next_retry_ms < 0
                                     else time.monotonic() + next_retry_ms / 1000)

    def _submit(self, queue: str, executor: Executor, jobs: list[ClaimedJob],
                inline: bool = True) -> Callable[[], None] | None:
        """Hand JOBS to the executor; with INLINE the last one may instead be admitted to
        run on this thread (returned), when a stand-by thread can take over fetching."""
        valid = []
        for job in jobs:
            if not job.name:
                log.error("dropped malformed entry %r from queue %s: no such job record",
                          job.id[:200], queue)
                continue
            with self._held_lock:
                self._held[queue].add(job.id)
            if job.problem:
                log.error("failed malformed job %s of queue %s: %s", job.id, queue, job.problem)
                self._settle_queue.put((queue, failure(job.id, ErrorKind.INVALID,
                                                       "MalformedJob", job.problem)))
                continue
            valid.append(job)
        run_here = None
        if inline and valid and self._standby[queue] > 0:
            run_here = executor.admit_inline(valid[-1])
            if run_here is not None:
                valid.pop()
        for job in valid:
            executor.submit(job)
        return run_here

    # -- settle ----------------------------------------------------------------------
    def _settle_loop(self) -> None:
        done = False
        while not done:
            item = self._settle_queue.get()
            batch: dict[str, list[Settlement]] = defaultdict(list)
            while item is not None:
                batch[item[0]].append(item[1])
                if sum(len(v) for v in batch.values()) >= SETTLE_BATCH_MAX:
                    break
                try:
                    item = self._settle_queue.get_nowait()
                except queue_mod.Empty:
                    break
            done = item is None
            try:
                with self._settle_lock:
                    self._write_settlements(batch)
            except Exception:  # noqa: BLE001 - a bug here must not stop all settling
                log.exception("could not settle a batch of %d job(s)",
                              sum(len(v) for v in batch.values()))

    def _write_once(self, queue: str, outcome: Settlement) -> bool:
        """Settle one outcome without retrying; False: it is for the settle thread."""
        try:
            self._store.finish(queue, self.sid, [outcome],
                               self.log_sink.logged([outcome.job_id]))
        except Exception:  # noqa: BLE001 - the settle thread retries (Redis down) or logs
            return False
        self._forget_settled(queue, [outcome])
        return True

    def _write_settlements(self, batch: dict[str, list[Settlement]]) -> None:
        backoff = 0.05
        for queue, outcomes in batch.items():
            while True:
                try:
                    self._store.finish(queue, self.sid, outcomes, self.log_sink.logged(
                        [o.job_id for o in outcomes]))
                    break
                except redis.RedisError as exc:
                    # the outcomes stay in memory until Redis is back; the lease keeps
                    # the jobs from being run elsewhere meanwhile
                    log.warning("could not settle %d job(s) (%s); retrying", len(outcomes), exc)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
            self._forget_settled(queue, outcomes)

    def _forget_settled(self, queue: str, outcomes: list[Settlement]) -> None:
        # only now, once they left the lease: _reconcile reads the held ids first
        with self._held_lock:
            self._held[queue].difference_update(o.job_id for o in outcomes)
        for outcome in outcomes:
            self.log_sink.forget(outcome.job_id)

    # -- heartbeat -------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_ms / 1000
        while not self._beat_stop.wait(interval):
            try:
                self._heartbeat_once()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:  # noqa: BLE001 - the lease must keep being renewed
                log.exception("heartbeat failed")

    def _heartbeat_once(self) -> None:
        store = self._beat_store
        for queue in self.queues:
            for dead in store.heartbeat(queue, self.sid):
                requeued, failed = store.requeue_stalled(queue, dead)
                if requeued >= 0 and (requeued or failed):
                    log.warning("supervisor %s stopped heartbeating: %d job(s) of %s "
                                "requeued, %d failed as stalled", dead, requeued, queue, failed)
        snapshot = self.snapshot()
        store.publish_supervisor(self.sid, snapshot, snapshot["ttl_ms"])

    def snapshot(self) -> dict[str, Any]:
        with self._process.oneshot():
            cpu = self._process.cpu_percent()
            rss = self._process.memory_info().rss
        return {
            "sid": self.sid,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "mode": self.mode,
            "queues": list(self.queues),
            "started_at": self.started_at,
            "heartbeat_ms": int(time.time() * 1000),
            # top: ttl_ms minus the key's PTTL is the snapshot's age on the server clock;
            # older than lease_ms means this supervisor's jobs are being taken back
            "lease_ms": self.config.lease_ms,
            "ttl_ms": self.config.lease_ms * 3,
            "cpu_percent": cpu,
            "rss_bytes": rss,
            "executors": {q: ex.snapshot() for q, ex in self.executors.items()},
            "running": [vars(r) for ex in self.executors.values() for r in ex.running()],
        }
