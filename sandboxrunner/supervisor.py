"""The supervisor: claims jobs from Redis, runs them on an executor, settles them.

Threads of one supervisor process:

  fetch-<queue>   per queue served, one thread holds the fetch role at a time: claims
                  jobs, blocks on an empty queue, hands jobs to the executor (see
                  fetching.py). In thread mode FETCH_STANDBY more stand by, so that the
                  fetching one may run a lone job itself.
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

Stop (``stop``; `signals.serve_until_signal` maps SIGINT/SIGTERM to it): stop claiming (a
fetch blocked on an empty queue is cut short), let running jobs finish for up to
grace_period ms, settle what finished, hand the jobs still running back to the queue
(hand_back.lua: not a crash, not counted toward max_stalled), remove the supervisor's
records, return. ``stop_now`` cuts the wait for running jobs short: they are handed back
at once, children killed.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
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
from .executors.base import Executor, MakeClient
from .executors.threads import ThreadExecutor
from .fetching import RETRY_BACKOFF_MAX_S, QueueFetcher
from .job import Settlement
from .joblog import RedisLogSink
from .outage import OutageLog
from .registry import Registry
from .store import Store

log = logging.getLogger(__name__)

SETTLE_BATCH_MAX = 500
FETCH_STANDBY = 2  # thread mode: fetch threads per queue waiting to take over fetching
SETTLE_BACKOFF_MIN_S = 0.05
FORCED_SETTLE_WAIT_S = 1.0  # stopping now: outcomes Redis cannot take by then are dropped


def _start_fork_server(config: Config, registry: Registry, make_client: MakeClient | None,
                       queues: tuple[str, ...]) -> Any:
    """Process mode: the fork server every child of this supervisor comes from."""
    if not config.use_separate_process:
        return None
    from .executors.forkserver import ForkServer

    return ForkServer(config, registry, make_client, queues)


def new_supervisor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Supervisor:
    def __init__(self, config: Config, registry: Registry, url: str,
                 make_client: MakeClient | None = None) -> None:
        """MAKE_CLIENT: the factory of the client a job's nested run_job uses (None: the
        process's default client, built from the project's config)."""
        self.config = config
        self.registry = registry
        self.url = url
        self.make_client = make_client
        self.sid = new_supervisor_id()
        self.queues = tuple(config.workers)
        self.started_at = time.time()
        # before any thread of ours starts: it may be forked from this process
        self.fork_server = _start_fork_server(config, registry, make_client, self.queues)
        self._stop = threading.Event()
        self._stop_now = threading.Event()  # stop without waiting for running jobs
        self._progress = threading.Event()  # a job ended while stopping (or stop_now)
        # the heartbeat outlives fetching: a draining supervisor still holds its lease
        self._beat_stop = threading.Event()
        self._settle_queue: queue_mod.SimpleQueue[tuple[str, Settlement] | None] = (
            queue_mod.SimpleQueue())
        self._settle_lock = threading.Lock()  # held by whoever writes outcomes
        self._store = Store(config, url)  # fetch + settle
        self._beat_store = Store(config, url)  # heartbeat: never waits behind job traffic
        self.log_sink = RedisLogSink(self._store, config.log_max_lines, config.result_ttl)
        self._threads: list[threading.Thread] = []
        # one warning per Redis outage per kind of thread, not one per retry
        fetch_outage = OutageLog("fetching jobs")
        self._settle_outage = OutageLog("writing job outcomes")
        self._heartbeat_outage = OutageLog("heartbeat")
        # the state of each queue served, in one record: its executor, the jobs it holds,
        # how it fetches (fetching.py)
        self.fetchers = {q: QueueFetcher(q, self.sid, self._store,
                                         self._make_executor(q, self.log_sink),
                                         self._stop, self._failer(q), fetch_outage)
                         for q in self.queues}
        # cron: ticks of the served queues' cron jobs, once across all supervisors
        self.cron = CronScheduler(config, registry, url, self.sid, self.queues)
        self._process = psutil.Process()

    def _make_executor(self, queue: str, sink: LogSink) -> Executor:
        report = self._reporter(queue)
        if self.config.use_separate_process:
            from .executors.processes import ProcessExecutor

            return ProcessExecutor(queue, self.registry, self.config, report, sink,
                                   make_client=self.make_client, fork_server=self.fork_server)
        return ThreadExecutor(queue, self.registry, self.config.effective_concurrency(),
                              report, sink, make_client=self.make_client)

    def _reporter(self, queue: str) -> Any:
        def report(outcome: Settlement) -> None:
            if self._stop.is_set():
                self._progress.set()  # a stop waiting for running jobs looks again
            # a lone job's outcome is written by the reporting thread itself: a hand-over
            # to the settle thread costs its caller more than the write. With other jobs
            # in hand the settle thread batches (one script for many), and the reporting
            # thread goes on serving them instead of waiting for Redis.
            if (self._settle_queue.empty() and self.fetchers[queue].executor.jobs_in_hand() == 0
                    and self._settle_lock.acquire(blocking=False)):
                try:
                    if self._write_once(queue, outcome):
                        return
                finally:
                    self._settle_lock.release()
            self._settle_queue.put((queue, outcome))

        return report

    def _failer(self, queue: str) -> Callable[[Settlement], None]:
        return lambda outcome: self._settle_queue.put((queue, outcome))

    @property
    def executors(self) -> dict[str, Executor]:
        """Each queue's executor."""
        return {q: fetcher.executor for q, fetcher in self.fetchers.items()}

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
        targets: list[tuple[str, Callable[[], None]]] = [
            (f"fetch-{q}", fetcher.loop) for q, fetcher in self.fetchers.items()
            for _ in range(fetchers)]
        targets += [("settle", self._settle_loop), ("heartbeat", self._heartbeat_loop)]
        for name, target in targets:
            thread = threading.Thread(target=target, name=f"sr-{name}", daemon=True)
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
        for fetcher in self.fetchers.values():
            fetcher.stop_for_good()
        grace_s = (self.config.grace_period if grace_ms is None else grace_ms) / 1000
        if not self._wait_for_running_jobs(grace_s) and not self._stop_now.is_set():
            log.warning("grace period of %g s over with %d job(s) still running: handing "
                        "them back", grace_s, self.jobs_in_hand())
        for executor in self.executors.values():
            executor.shutdown(0)  # kills the children that are left, with their processes
        if self.fork_server is not None:
            self.fork_server.close()
        self._settle_queue.put(None)
        self._join("sr-settle", FORCED_SETTLE_WAIT_S if self._stop_now.is_set() else None)
        self._beat_stop.set()
        self._join("sr-heartbeat")
        self.log_sink.close()
        self._hand_back()
        self._store.close()
        self._beat_store.close()
        log.info("supervisor %s stopped", self.sid)

    def stop_now(self) -> None:
        """Cut a stop under way (or the next one) short: jobs still running are handed
        back at once instead of after the grace period, and their children killed."""
        self._stop_now.set()
        self._progress.set()

    def jobs_in_hand(self) -> int:
        """Jobs running (or claimed and about to run) on this supervisor."""
        return sum(executor.jobs_in_hand() for executor in self.executors.values())

    def _wait_for_running_jobs(self, grace_s: float) -> bool:
        """Wait up to GRACE_S (less after stop_now) for the jobs in hand to end; whether
        they all did."""
        end = time.monotonic() + grace_s
        while self.jobs_in_hand() and not self._stop_now.is_set():
            left_s = end - time.monotonic()
            if left_s <= 0:
                return False
            # every way a job ends reports it (which sets _progress); the cap is a safety
            # net should one not
            self._progress.wait(min(left_s, 1.0))
            self._progress.clear()  # before looking again: a report after that sets it
        return self.jobs_in_hand() == 0

    def _join(self, name: str, timeout_s: float | None = None) -> None:
        for thread in self._threads:
            if thread.name == name:
                thread.join(timeout_s)

    def _hand_back(self) -> None:
        """Give the queues the jobs still held, and leave the supervisor records."""
        try:
            for queue in self.queues:
                handed = self._store.hand_back(queue, self.sid)
                if handed:
                    log.warning("handed %d running job(s) of %s back to the queue: they "
                                "run again on another supervisor (a hand-back, not a "
                                "crash)", handed, queue)
            self._store.remove_supervisor(self.sid)
        except redis.RedisError as exc:
            log.warning("could not hand jobs back or remove this supervisor's records "
                        "(%s): they expire, and its jobs are taken back once its lease "
                        "lapses", exc)

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
        backoff = SETTLE_BACKOFF_MIN_S
        for queue, outcomes in batch.items():
            while True:
                try:
                    self._store.finish(queue, self.sid, outcomes, self.log_sink.logged(
                        [o.job_id for o in outcomes]))
                    self._settle_outage.succeeded()
                    break
                except redis.RedisError as exc:
                    # the outcomes stay in memory until Redis is back; the lease keeps
                    # the jobs from being run elsewhere meanwhile
                    self._settle_outage.failed(exc, backoff)
                    if self._stop_now.wait(backoff):
                        log.error("stopping now: %d outcome(s) of %s not written; those "
                                  "jobs run again once this supervisor's lease lapses",
                                  len(outcomes), queue)
                        return
                    backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
            self._forget_settled(queue, outcomes)

    def _forget_settled(self, queue: str, outcomes: list[Settlement]) -> None:
        # only now, once they left the lease: a fetcher's reconcile reads the held ids first
        self.fetchers[queue].held.discard([o.job_id for o in outcomes])
        for outcome in outcomes:
            self.log_sink.forget(outcome.job_id)

    # -- heartbeat -------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_ms / 1000
        while not self._beat_stop.wait(interval):
            try:
                self._heartbeat_once()
                self._heartbeat_outage.succeeded()
            except redis.RedisError as exc:
                self._heartbeat_outage.failed(exc, interval)
            except Exception:  # noqa: BLE001 - the lease must keep being renewed
                log.exception("heartbeat failed")

    def _heartbeat_once(self) -> None:
        store = self._beat_store
        for queue in self.queues:
            for dead in store.heartbeat(queue, self.sid):
                requeued, failed = store.requeue_stalled(queue, dead)
                if requeued >= 0 and (requeued or failed):
                    log.warning("supervisor %s stopped heartbeating (crashed or was killed): "
                                "%d job(s) of %s requeued, %d failed as stalled", dead,
                                requeued, queue, failed)
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
