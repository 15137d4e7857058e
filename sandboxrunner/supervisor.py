"""The supervisor: claims jobs from Redis, runs them on an executor, settles them.

Threads of one supervisor process:

  fetch-<queue>   per queue served, one thread holds the fetch role at a time: claims
                  jobs, blocks on an empty queue, hands jobs to the executor (see
                  fetching.py). In thread mode FETCH_STANDBY more stand by, so that the
                  fetching one may run a lone job itself.
  settle          takes outcomes reported by the executors and writes them in batches
                  (one finish script per queue per batch), which also notifies callers
                  (see settling.py).
  heartbeat       every heartbeat_ms renews the lease on each queue (its own connection,
                  so slow job traffic never lets a live lease lapse), takes back the jobs
                  of supervisors whose lease lapsed, stops the running jobs asked to
                  cancel (job_control.py), and publishes a snapshot for `top`.
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
at once, children killed. A stop is bounded whatever Redis answers (stalled, gone): the
outcomes get the grace period plus OUTCOMES_AFTER_GRACE_S, the hand-back HAND_BACK_S more,
and a Redis call that does not return by its deadline is left behind on its own thread.
What Redis did not take is logged with its job ids; those jobs are still in this
supervisor's lease, so another supervisor runs them once it lapses: none is lost.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil
import redis

from .config import Config
from .context import LogSink
from .cron import CronScheduler
from .executors.base import Executor, MakeClient
from .executors.threads import ThreadExecutor
from .fetching import QueueFetcher
from .job import Settlement
from .joblog import RedisLogSink
from .outage import Outages
from .preflight import check_at_start
from .progress import RedisProgressSink
from .registry import Registry
from .settling import Settler
from .store import Store, rate_limits_arg

log = logging.getLogger(__name__)

FETCH_STANDBY = 2  # thread mode: fetch threads per queue waiting to take over fetching
# A stop's last writes, whatever Redis answers: outcomes get the grace period plus
# OUTCOMES_AFTER_GRACE_S (stopping now: FORCED_OUTCOMES_S from then), the hand-back and
# the supervisor's records HAND_BACK_S more. What Redis did not take by then is logged.
OUTCOMES_AFTER_GRACE_S = 1.0
FORCED_OUTCOMES_S = 1.0
HAND_BACK_S = 1.0
STOP_WRITES_S = OUTCOMES_AFTER_GRACE_S + HAND_BACK_S  # a stop's bound past grace_period


def _in_background(name: str, call: Callable[[], None]) -> threading.Thread:
    """CALL started on a daemon thread: a stop joins it for as long as it can wait (a
    Redis call on a stalled server cannot be cut short)."""
    thread = threading.Thread(target=call, name=f"sr-{name}", daemon=True)
    thread.start()
    return thread


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
        self._handed_back = False  # the stop handed back what it held, left its records
        self._stopped = threading.Event()  # the stop returned (threads left behind are quiet)
        self._store = Store(config, url)  # fetch + settle
        self._beat_store = Store(config, url)  # heartbeat: never waits behind job traffic
        self.log_sink = RedisLogSink(self._store, config.log_max_lines, config.result_ttl)
        self._threads: list[threading.Thread] = []
        # one warning per Redis outage per kind of thread, not one per retry; the first
        # thread to find Redis back ends the others' backoff pauses
        self._outages = Outages()
        fetch_outage = self._outages.log("fetching jobs")
        self._heartbeat_outage = self._outages.log("heartbeat")
        self._snapshot_outage = self._outages.log(
            "publishing this supervisor's snapshot for top")
        self.progress_sink = RedisProgressSink(  # ctx.progress
            self._store, self.sid, self._outages.log("writing job progress"))
        self.settler = Settler(self._store, self.sid, self.log_sink,
                               lambda queue, ids: self.fetchers[queue].held.discard(ids),
                               self._outages)
        # the state of each queue served, in one record: its executor, the jobs it holds,
        # how it fetches (fetching.py)
        self.fetchers = {q: QueueFetcher(q, self.sid, self._store,
                                         self._make_executor(q, self.log_sink),
                                         self._stop, self._failer(q), fetch_outage,
                                         rate_limits_arg(registry.rate_limits(q)))
                         for q in self.queues}
        # cron: ticks of the served queues' cron jobs, once across all supervisors
        self.cron = CronScheduler(config, registry, url, self.sid, self.queues)
        self._process = psutil.Process()

    def _make_executor(self, queue: str, sink: LogSink) -> Executor:
        report = self._reporter(queue)
        if self.config.use_separate_process:
            from .executors.processes import ProcessExecutor

            return ProcessExecutor(queue, self.registry, self.config, report, sink,
                                   make_client=self.make_client, fork_server=self.fork_server,
                                   progress_sink=self.progress_sink)
        return ThreadExecutor(queue, self.registry, self.config.effective_concurrency(),
                              report, sink, make_client=self.make_client,
                              progress_sink=self.progress_sink)

    def _reporter(self, queue: str) -> Any:
        def report(outcome: Settlement) -> None:
            self.progress_sink.ended(outcome.job_id)  # its last progress, then its outcome
            if self._stop.is_set():
                self._progress.set()  # a stop waiting for running jobs looks again
            # a lone job's outcome is written by the reporting thread itself. With other
            # jobs in hand the settle thread batches (one script for many), and the
            # reporting thread goes on serving them instead of waiting for Redis.
            alone = self.fetchers[queue].executor.jobs_in_hand() == 0
            self.settler.report(queue, outcome, alone)

        return report

    def _failer(self, queue: str) -> Callable[[Settlement], None]:
        return lambda outcome: self.settler.put(queue, outcome)

    @property
    def executors(self) -> dict[str, Executor]:
        """Each queue's executor."""
        return {q: fetcher.executor for q, fetcher in self.fetchers.items()}

    @property
    def mode(self) -> str:
        return "processes" if self.config.use_separate_process else "threads"

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        check_at_start(self._beat_store)  # reply channels refused, an evicting Redis
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
        targets += [("settle", self.settler.loop), ("heartbeat", self._heartbeat_loop)]
        for name, target in targets:
            thread = threading.Thread(target=target, name=f"sr-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("supervisor %s started: queues %s, %s mode, concurrency %d", self.sid,
                 ",".join(self.queues), self.mode, self.config.effective_concurrency())

    def stop(self, grace_ms: int | None = None) -> None:
        """Drain and stop, within the grace period plus STOP_WRITES_S whatever Redis
        answers (a call Redis does not answer runs on a thread of its own, given up at
        its deadline); safe to call more than once."""
        if self._stop.is_set():
            return
        self._stop.set()
        grace_s = (self.config.grace_period if grace_ms is None else grace_ms) / 1000
        grace_end = time.monotonic() + grace_s
        self.settler.write_until(grace_end + OUTCOMES_AFTER_GRACE_S)
        self._note_waiting_outcomes(grace_s)
        stopping_claims = _in_background("stop-claiming", self._stop_claiming)
        if not self._wait_for_running_jobs(grace_s) and not self._stop_now.is_set():
            log.warning("grace period of %g s over with %d job(s) still running: handing "
                        "them back", grace_s, self.jobs_in_hand())
        stopping_claims.join(max(0.0, self.settler.due_at - time.monotonic()))
        for executor in self.executors.values():
            executor.shutdown(0)  # kills the children that are left, with their processes
        if self.fork_server is not None:
            self.fork_server.close()
        self.settler.close()
        self._join("sr-settle", max(0.0, self.settler.due_at - time.monotonic()))
        _in_background("stop-writes", self._last_writes).join(HAND_BACK_S)
        self._log_left_behind()
        self._stopped.set()
        self._outages.silence()
        self._store.close()
        self._beat_store.close()
        log.info("supervisor %s stopped", self.sid)

    def stop_now(self) -> None:
        """Cut a stop under way (or the next one) short: jobs still running are handed
        back at once instead of after the grace period, and their children killed."""
        self._stop_now.set()
        self._progress.set()
        self.settler.write_until(time.monotonic() + FORCED_OUTCOMES_S)

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

    def _stop_claiming(self) -> None:
        self.cron.stop()
        for fetcher in self.fetchers.values():
            fetcher.stop_for_good()

    def _last_writes(self) -> None:
        """Stop heartbeating (the lease holds until the hand-back), write the last log
        lines, give the queues the jobs still held, and leave the supervisor records."""
        self._beat_stop.set()
        self._join("sr-heartbeat")
        self.log_sink.close()
        self.progress_sink.close()
        try:
            for queue in self.queues:
                handed = self._store.hand_back(queue, self.sid)
                if handed:
                    log.warning("handed %d running job(s) of %s back to the queue: they "
                                "run again on another supervisor (a hand-back, not a "
                                "crash)", handed, queue)
            self._store.remove_supervisor(self.sid)
            self._handed_back = True
        except redis.RedisError as exc:
            if self._stopped.is_set():  # given up and logged by the stop already
                return
            log.warning("could not hand jobs back or remove this supervisor's records "
                        "(%s): they expire, and its jobs are taken back once its lease "
                        "lapses", exc)

    def _note_waiting_outcomes(self, grace_s: float) -> None:
        waiting = sum(len(ids) for ids in self.settler.unwritten().values())
        if waiting:
            log.warning("%d job outcome(s) wait for Redis to take them: trying for up to "
                        "%g s more", waiting, grace_s + OUTCOMES_AFTER_GRACE_S)

    def _log_left_behind(self) -> None:
        """Log, with their ids, the jobs whose outcome Redis did not take, and those not
        handed back: they stay in this supervisor's lease, which brings them back."""
        unwritten = self.settler.unwritten()
        for queue, ids in unwritten.items():
            log.error("%d outcome(s) of %s not written: Redis did not take them by the end "
                      "of the grace period plus %g s: %s; those jobs run again on another "
                      "supervisor (their lease brings them back)", len(ids), queue,
                      OUTCOMES_AFTER_GRACE_S, " ".join(ids))
        if self._handed_back:
            return
        for queue, fetcher in self.fetchers.items():
            running = sorted(fetcher.held.copy().difference(unwritten.get(queue, ())))
            if running:
                log.error("%d job(s) of %s not handed back: %s; they run again on another "
                          "supervisor once this one's lease lapses", len(running), queue,
                          " ".join(running))

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
            dead_sids, cancels = store.heartbeat_and_cancels(queue, self.sid)
            for job_id in cancels:
                self.fetchers[queue].executor.cancel(job_id)
            for dead in dead_sids:
                requeued, failed = store.requeue_stalled(queue, dead)
                if requeued >= 0 and (requeued or failed):
                    log.warning("supervisor %s stopped heartbeating (crashed or was killed): "
                                "%d job(s) of %s requeued, %d failed as stalled", dead,
                                requeued, queue, failed)
        snapshot = self.snapshot()
        try:
            store.publish_supervisor(self.sid, snapshot, snapshot["ttl_ms"])
            self._snapshot_outage.succeeded()
        except redis.OutOfMemoryError as exc:  # the lease is renewed: only `top` misses it
            self._snapshot_outage.failed(exc, self.config.heartbeat_ms / 1000)

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
            "running": self._running_rows(),
        }

    def _running_rows(self) -> list[dict[str, Any]]:
        """The running jobs for `top`, each with its latest ctx.progress report."""
        rows = [dict(vars(r)) for ex in self.executors.values() for r in ex.running()]
        self.progress_sink.keep_only({row["id"] for row in rows})
        for row in rows:
            report = self.progress_sink.latest(row["id"])
            if report is not None:
                row.update(progress=report.fraction, progress_message=report.message)
        return rows
