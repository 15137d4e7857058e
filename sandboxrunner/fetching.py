"""Fetching one queue's jobs for a supervisor: claim, block on an empty queue, hand over.

One `QueueFetcher` per queue served; its fetch threads (supervisor.py starts them) take
turns holding its fetch role, and whoever holds the role owns the fetch state below.
While the executor has free slots, the holder claims up to that many jobs in one script
call; when the queue is empty it blocks on BLMOVE (its own connection) instead of polling,
with the claim of the job it moves pipelined behind it (one round trip). That block is
bounded by the next delayed or throttled job's due time (every claim replies with it, and
a delayed job due sooner than any other wakes a blocked fetch: see add_delayed in
scripts/_lib.lua). Every claim sends the rate limits of the queue's jobs (from this
supervisor's job files: the claim script keeps no per-job state to look up).

In thread mode the holder may keep the last job of a claim and run it itself (no hand-over
to a job thread: a single waiting caller gets its result sooner), leaving the role to a
stand-by fetch thread; it takes a slot like any job and stands by once done. In process
mode a single fetch thread hands every job to a child.

While the queue is paused (queue_control.py) every claim replies `Store.PAUSED` and hands
out nothing: the holder then claims again every PAUSED_POLL_S instead of blocking (a BLMOVE
would return at once on a non-empty queue, and its job only go back), so a resume is seen
within that.

Claimed ids sit in the supervisor's active list (its lease) until settled. After a Redis
error, and once every lease_ms anyway, the fetcher compares that list with the jobs it
holds: an id there that never reached it is claimed again, so nothing strands a job in a
live lease. A claim's reply lost with its connection does (the error says so); a Sentinel
failover can without any error: for up to a second, connections made since the Sentinels
named the new master reach it while older ones still reach the old master, so a job
claimed on the new master may be settled on the old one, whose writes the failover throws
away (measured: 1 to 5 jobs a failover, tests/faults/test_sentinel_failover.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from .executors.base import Executor
from .job import ClaimedJob, Settlement
from .job_errors import ErrorKind
from .outage import OutageLog
from .store import BLOCK_TIMEOUT_S, Store

log = logging.getLogger(__name__)

ROLE_WAIT_S = 1.0  # a stand-by fetch thread looks at the stop flag this often
FETCH_BACKOFF_MIN_S = 0.05
RETRY_BACKOFF_MAX_S = 2.0
CLAIM_BATCH_MAX = 200
MIN_BLOCK_S = 0.01
UNBLOCK_RETRY_S = 0.05  # a stop unblocks a fetch again if it had not blocked yet
SLEEP_UNDER_S = 0.005  # a due time this close is slept for, not blocked for
WAKE_TRIES, WAKE_RETRY_S = 20, 0.002  # a DueWaker's tries to find the fetch blocked
PAUSED_POLL_S = 0.25  # a paused queue is looked at this often: how soon a resume is seen


class HeldJobs:
    """Ids a queue's executor was handed and whose outcome is not written yet."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def add(self, job_id: str) -> None:
        with self._lock:
            self._ids.add(job_id)

    def discard(self, job_ids: list[str]) -> None:
        with self._lock:
            self._ids.difference_update(job_ids)

    def copy(self) -> set[str]:
        with self._lock:
            return set(self._ids)


class DueWaker:
    """Cuts a blocked fetch short when the next delayed (or throttled) job is due: Redis
    times a BLMOVE out on its timer tick (``hz`` 10: up to 100 ms late), while a CLIENT
    UNBLOCK sent from here at the due time ends it within a round trip. Its claim then
    runs as on any timeout. Only fetches bounded by a due time start one."""

    def __init__(self, store: Store, after_s: float) -> None:
        self._store = store
        self._done = threading.Event()
        self._timer = threading.Timer(after_s, self._wake)
        self._timer.daemon = True
        self._timer.start()

    def _wake(self) -> None:
        # the BLMOVE may not have reached Redis yet: try again for a little while
        for _ in range(WAKE_TRIES):
            if self._done.is_set():
                return
            try:
                if self._store.interrupt_waits() > 0:
                    return
            except redis.RedisError as exc:  # no CLIENT UNBLOCK (an ACL): the tick ends it
                log.debug("could not wake a fetch for a due job: %s", exc)
                return
            self._done.wait(WAKE_RETRY_S)

    def cancel(self) -> None:
        self._done.set()
        self._timer.cancel()


class QueueFetcher:
    """The fetch side of one queue (see the module doc)."""

    def __init__(self, queue: str, sid: str, store: Store, executor: Executor,
                 stopping: threading.Event, fail: Callable[[Settlement], None],
                 outage: OutageLog, limits: str = "") -> None:
        """LIMITS: the rate limits of the queue's jobs, as every claim sends them
        (`store.rate_limits_arg`)."""
        self.queue, self.sid = queue, sid
        self.limits = limits
        self.store, self.executor = store, executor
        self.held = HeldJobs()
        self._stopping = stopping
        self._fail = fail  # how a malformed job's failure reaches the settle thread
        self._outage = outage
        self._wake = threading.Event()  # ends a backoff pause: Redis back, or a stop
        self._role = threading.Lock()
        self._standby_lock = threading.Lock()
        self._standby = 0  # fetch threads waiting for the role
        # from the last claim: it left the queue empty (so the next fetch blocks on BLMOVE
        # without another claim first), and when the next retry is due (monotonic)
        self._drained = False
        self._retry_due_at: float | None = None
        self._backoff_s = FETCH_BACKOFF_MIN_S
        self._reconcile_due = False
        self._reconcile_every_s = store.config.lease_ms / 1000
        self._reconciled_at = time.monotonic()
        self._full = False  # a full Redis refused the last BLMOVE
        self._paused = False  # the last claim found the queue paused

    def loop(self) -> None:
        """One fetch thread: wait for the fetch role, fetch until a job is to run on this
        thread, hand the role on to a stand-by thread, run the job, wait again."""
        while not self._stopping.is_set():
            with self._standby_lock:
                self._standby += 1
            got = self._role.acquire(timeout=ROLE_WAIT_S)
            with self._standby_lock:
                self._standby -= 1
            if not got:
                continue
            run_here = None
            try:
                while run_here is None and not self._stopping.is_set():
                    run_here = self._turn()
            finally:
                self._role.release()
            if run_here is not None:
                try:
                    run_here()
                except Exception:  # noqa: BLE001 - a fetch thread must outlive any one job
                    log.exception("unexpected error running a job of %s; carrying on",
                                  self.queue)

    def stop_for_good(self) -> None:
        """Take the fetch role and keep it (call once stopping is set): no fetch starts
        again. A fetch blocked on an empty queue would hold this up for BLOCK_TIMEOUT_S,
        so it is cut short; one about to block is cut short on the next try, and one
        backing off after a Redis error is woken."""
        while True:
            self._wake.set()
            try:
                self.store.interrupt_waits()
            except redis.RedisError as exc:  # no CLIENT UNBLOCK (an ACL): the wait ends
                log.debug("could not cut a blocking fetch of %s short: %s", self.queue, exc)
            if self._role.acquire(timeout=UNBLOCK_RETRY_S):
                return

    def _turn(self) -> Callable[[], None] | None:
        """Fetch once, riding out Redis errors; a job to run on this thread, if any."""
        try:
            now = time.monotonic()
            if self._reconcile_due or now - self._reconciled_at >= self._reconcile_every_s:
                self._reconcile()
                self._reconcile_due, self._reconciled_at = False, now
            run_here = self._fetch_once()
            self._outage.succeeded()
            self._backoff_s = FETCH_BACKOFF_MIN_S
            return run_here
        except redis.RedisError as exc:
            self._outage.failed(exc, self._backoff_s)
        except Exception:  # noqa: BLE001 - this thread must outlive any one bad job
            log.exception("unexpected error fetching from %s; carrying on", self.queue)
        self._reconcile_due = True  # a claim may have run with its reply lost
        self._drained = False
        self._outage.pause(self._backoff_s, self._wake)  # ends early once Redis is back
        self._backoff_s = min(self._backoff_s * 2, RETRY_BACKOFF_MAX_S)
        return None

    def _reconcile(self) -> None:
        """Claim again the ids in this supervisor's lease that never reached it."""
        held = self.held.copy()  # before reading the lease: see Supervisor._forget_settled
        lost = [i for i in dict.fromkeys(self.store.lease_ids(self.queue, self.sid))
                if i not in held]
        if not lost:
            return
        log.warning("%d job(s) of %s sat in this supervisor's lease without reaching it (a "
                    "reply lost with its connection, or an outcome with a failed-over "
                    "master); claiming them again", len(lost), self.queue)
        jobs, _ = self.store.claim(self.queue, self.sid, 0, lost, self.limits)
        self._submit(jobs, inline=False)

    def _fetch_once(self) -> Callable[[], None] | None:
        free = self.executor.free_slots()
        if free <= 0:
            self.executor.wait_for_slot(0.5)
            return None
        count = min(free, CLAIM_BATCH_MAX)
        due_at = self._retry_due_at
        if self._paused:
            self._stopping.wait(PAUSED_POLL_S)
        if (self._paused or not self._drained
                or (due_at is not None and due_at <= time.monotonic())):
            jobs, next_retry_ms = self.store.claim(self.queue, self.sid, count,
                                                   limits=self.limits)
            self._note_claim(len(jobs), count, next_retry_ms)
            if jobs:
                return self._submit(jobs)
            if next_retry_ms == 0 or self._paused:
                return None  # a retry is due right now (the next claim moves it), or paused
        return self._block_for_jobs(count)

    def _block_for_jobs(self, count: int) -> Callable[[], None] | None:
        """The queue was empty at the last claim: block on it (up to the next due time)
        and claim what arrives, instead of claiming again first."""
        block_s = BLOCK_TIMEOUT_S
        waker = None
        if self._retry_due_at is not None and self._retry_due_at - time.monotonic() < block_s:
            block_s = self._retry_due_at - time.monotonic()
            if block_s < SLEEP_UNDER_S:  # too soon to block for: claim once it is due
                self._stopping.wait(max(block_s, 0))
                self._drained = False
                return None
            waker = DueWaker(self.store, block_s)  # due before the block would time out
        try:
            jobs, next_retry_ms = self.store.wait_and_claim(self.queue, self.sid, count,
                                                            max(block_s, MIN_BLOCK_S),
                                                            self.limits)
        except redis.OutOfMemoryError:
            # a full Redis refuses BLMOVE (it may add memory) but runs the claim script
            # (allow-oom): claim again after a block's time instead, until it has room
            self._note_full(True)
            self._stopping.wait(block_s)
            self._drained = False
            return None
        finally:
            if waker is not None:
                waker.cancel()
        self._note_full(False)
        self._note_claim(len(jobs), count, next_retry_ms)
        return self._submit(jobs)

    def _note_full(self, full: bool) -> None:
        """Say once when a full Redis makes this queue claim without blocking, and when
        it has room again."""
        if full != self._full:
            self._full = full
            log.warning("Redis is full (maxmemory): queue %s is claimed once a second instead "
                        "of blocking until it has room" if full else
                        "Redis has room again: queue %s blocks for jobs again", self.queue)

    def _note_claim(self, got: int, count: int, next_retry_ms: int) -> None:
        """Remember whether a claim emptied the queue, and when the next retry is due (or
        that the queue is paused)."""
        paused = next_retry_ms == Store.PAUSED
        if paused != self._paused:
            self._paused = paused
            log.info("queue %s is paused: claiming none of its jobs until it is resumed"
                     if paused else "queue %s is resumed: claiming its jobs again", self.queue)
        if paused:
            next_retry_ms = -1
        self._drained = got < count
        self._retry_due_at = (None if next_retry_ms < 0
                              else time.monotonic() + next_retry_ms / 1000)

    def _submit(self, jobs: list[ClaimedJob], inline: bool = True) -> Callable[[], None] | None:
        """Hand JOBS to the executor; with INLINE the last one may instead be admitted to
        run on this thread (returned), when a stand-by thread can take over fetching."""
        valid = []
        for job in jobs:
            if not job.name:
                log.error("dropped malformed entry %r from queue %s: no such job record",
                          job.id[:200], self.queue)
                continue
            self.held.add(job.id)
            if job.problem:
                log.error("failed malformed job %s of queue %s: %s", job.id, self.queue,
                          job.problem)
                self._fail(Settlement.failed(job.id, ErrorKind.INVALID, "MalformedJob",
                                             job.problem))
                continue
            valid.append(job)
        run_here = None
        if inline and valid and self._standby > 0:
            run_here = self.executor.admit_inline(valid[-1])
            if run_here is not None:
                valid.pop()
        for job in valid:
            self.executor.submit(job)
        return run_here
