"""Cron: the schedules of job files, each tick fired exactly once across all supervisors.

A job with ``cron = "..."`` (or ``{"pattern", "data", "tz"}``) is run as
``run_job(name, data)`` without a waiting caller on every tick of its croniter pattern:
five fields, or six with seconds last; ``tz`` is an IANA zone, UTC by default.

Every supervisor runs one `CronScheduler` thread for the cron jobs of the queues it
serves (a priority-only supervisor fires the priority cron jobs; ticks of a queue fire
only while a supervisor of that queue runs). The thread sleeps until the next tick of any
of its schedules, then hands each due tick to the ``cron_fire`` script, which decides
atomically, by the Redis server's clock:

  * a tick fires only if it is later than the schedule's last handled tick, so however
    many supervisors wake for it, one enqueues and the others get ``done``; claiming the
    tick and enqueueing its run is one script, so a crash cannot lose a claimed tick;
  * a singleton whose previous run is still in flight skips the tick (recorded as such).

Outage policy: the scheduler always asks for the latest due tick, never the ones before
it. After a time with no supervisor (or a stalled scheduler), at most one catch-up run is
made, at start, for the most recent missed tick; the others are dropped. A new schedule,
or one whose pattern or tz changed, fires nothing from before it was synced (``since``).

Schedule sync (``cron_sync``, on start), for each served queue. The rule: a supervisor
changes only the schedules of jobs it has loaded, never those of jobs it could not have
loaded (another version's or project's, or one whose file was deleted):

  * its cron jobs' schedules are written; an unchanged one keeps its state, a changed
    pattern or tz starts afresh;
  * the schedule of a job it has without cron on that queue is deleted;
  * the schedule of a job it does not have is kept as it is, and whoever has the job keeps
    firing it. `sandboxrunner cron` shows it as not loaded by the newest supervisor (its
    ``synced_by`` is not the ``@sync`` sid); ``sandboxrunner cron --remove NAME`` deletes it
    once the job is gone for good.

A supervisor fires only schedules whose stored pattern and tz equal its own. So in a rolling
deploy the older supervisors stop firing a schedule the newer version changed or whose cron
it removed (they get ``changed`` or ``gone``), while a job the newer version no longer has
at all goes on being fired by the older supervisors until they stop; and a supervisor
started with the wrong job files (a missing folder is an error, see registry.py) cannot
delete or stop the schedules of the right ones. If Redis loses the hash (flush, restart
without persistence), the next fire sees no ``@sync`` marker and the scheduler syncs again.

Redis layout (``keys.Keys.cron``): one HASH per queue, field job name -> JSON
``{pattern, tz, since, next, last, job, skipped, runs, skips, error, synced_by,
synced_at, manual_runs, manual_at, manual_job}`` (times in ms; ``job`` is the last run's
id, or the in-flight run that made the last tick skip; ``manual_*`` appear once a run by
hand was made), plus the ``@sync`` field ``{sid, at}`` of the newest sync.
`sandboxrunner.cron_state` reads it for the CLI and dashboards. `cron_now.run_now` runs a
cron job by hand, outside its schedule, from the caller side (the CLI, a client, the web
dashboard), which never imports this scheduler.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import redis
from croniter import croniter

from .config import Config
from .cron_now import cron_call
from .errors import CronScheduleNotFound, InvalidJobData
from .job import CronFired, CronRun, PreparedJob
from .keys import QUEUES, new_job_id
from .registry import JobSpec, Registry
from .store import Store

log = logging.getLogger(__name__)

RETRY_BACKOFF_MAX_S = 2.0


@dataclass(frozen=True)
class Schedule:
    """A cron job as the scheduler fires it: its run prepared once, as run_job prepares a
    call (each tick enqueues it under a fresh id); `error` set means it is shown but
    never fired (and CALL is None)."""

    queue: str
    name: str
    pattern: str
    tz: str
    call: PreparedJob | None = None
    error: str = ""

    def tick_at_or_before(self, epoch_ms: int) -> int:
        """The latest tick at or before EPOCH_MS."""
        # croniter's get_prev is strictly before its start: start 1 ms later
        return _tick(self.pattern, self.tz, epoch_ms + 1, forward=False)

    def tick_after(self, epoch_ms: int) -> int:
        """The first tick strictly after EPOCH_MS."""
        return _tick(self.pattern, self.tz, epoch_ms, forward=True)


def _tick(pattern: str, tz: str, epoch_ms: int, *, forward: bool) -> int:
    start = datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(ZoneInfo(tz))
    it = croniter(pattern, start)
    found = it.get_next(datetime) if forward else it.get_prev(datetime)
    return int(found.timestamp() * 1000)


def schedule_of(spec: JobSpec, config: Config) -> Schedule:
    """SPEC's schedule, its run prepared once, as run_job would prepare it."""
    assert spec.cron is not None
    cron = spec.cron
    try:
        call = cron_call(spec, config)
    except InvalidJobData as exc:
        log.error("cron job %s (%s) will not run: %s", spec.name, spec.source, exc)
        return Schedule(spec.queue, spec.name, cron.pattern, cron.tz, error=str(exc))
    return Schedule(spec.queue, spec.name, cron.pattern, cron.tz, call)


def schedules_for(registry: Registry, queues: tuple[str, ...], config: Config) -> list[Schedule]:
    """The schedules of the cron jobs of QUEUES, in queue then name order."""
    return [schedule_of(spec, config) for queue in queues for spec in registry.for_queue(queue)
            if spec.cron is not None]


class CronScheduler:
    """One supervisor's cron thread: sync on start, then fire each due tick."""

    def __init__(self, config: Config, registry: Registry, url: str, sid: str,
                 queues: tuple[str, ...]) -> None:
        self.sid = sid
        self.queues = queues
        self.schedules = schedules_for(registry, queues, config)
        # the queue of each loaded job's schedule (None: no cron), for the sync's removals
        self._cron_queue = {name: spec.queue if spec.cron else None
                            for name, spec in registry.jobs.items()}
        self._store = Store(config, url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clock_offset_ms = 0  # Redis server time minus local time
        self._next_ms: dict[tuple[str, str], int] = {}
        self._last_outcome: dict[tuple[str, str], str] = {}
        self._synced = False  # a start syncs once (the supervisor may sync before start)

    def start(self) -> None:
        """Sync this supervisor's schedules into Redis (unless done already), then start
        firing them."""
        if not self._synced:
            self.sync()
        if any(not s.error for s in self.schedules):
            self._thread = threading.Thread(target=self._run, name="sr-cron", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._store.close()

    def sync(self) -> None:
        now_ms = self._measure_clock()
        for queue in self.queues:
            entries = [(s.name, s.pattern, s.tz, s.tick_after(now_ms), s.error)
                       for s in self.schedules if s.queue == queue]
            without_cron = [n for n, q in self._cron_queue.items() if q != queue]
            added, removed, kept = self._store.cron_sync(queue, self.sid, entries, without_cron)
            for name in added:
                log.info("cron schedule %s of %s synced", name, queue)
            for name in removed:
                log.info("cron schedule %s of %s removed: job %s has no cron on this queue "
                         "any more", name, queue, name)
            for name in kept:
                log.info("cron schedule %s of %s kept: this supervisor has no job %s, so it "
                         "leaves it to supervisors that have it (`sandboxrunner cron` shows it)",
                         name, queue, name)
        self._next_ms.clear()  # the next pass asks for every schedule's latest due tick
        self._synced = True

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                wake_ms = self._fire_due()
                backoff = 0.05
            except redis.RedisError as exc:
                log.warning("cron scheduler lost Redis (%s); retrying in %.2fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                continue
            self._stop.wait(max(0.0, (wake_ms - self._now_ms()) / 1000))

    def _fire_due(self) -> int:
        """Fire every due tick; return when (server ms) the next one is due."""
        now_ms = self._now_ms()
        for schedule in self.schedules:
            key = (schedule.queue, schedule.name)
            if schedule.error or self._next_ms.get(key, 0) > now_ms:
                continue
            fired = self._fire(schedule, schedule.tick_at_or_before(now_ms))
            if fired.outcome == "lost":
                log.warning("cron schedules are gone from Redis (flushed or restarted "
                            "without persistence): syncing again")
                self.sync()
                return self._now_ms()
            if fired.outcome == "early":  # our clock estimate ran ahead: retry at the tick
                self._next_ms[key] = schedule.tick_after(fired.server_ms)
                continue
            self._next_ms[key] = schedule.tick_after(max(now_ms, fired.server_ms))
        live = [self._next_ms.get((s.queue, s.name), now_ms) for s in self.schedules
                if not s.error]
        return min(live, default=now_ms + 60_000)

    def _fire(self, schedule: Schedule, tick_ms: int) -> CronFired:
        assert schedule.call is not None  # a schedule in error is never fired
        call = replace(schedule.call, job_id=new_job_id(schedule.queue))
        run = CronRun(schedule.pattern, schedule.tz, tick_ms, schedule.tick_after(tick_ms),
                      call)
        fired = self._store.cron_fire(run)
        self._clock_offset_ms = fired.server_ms - int(time.time() * 1000)
        self._log_outcome(schedule, tick_ms, fired)
        return fired

    def _log_outcome(self, schedule: Schedule, tick_ms: int, fired: CronFired) -> None:
        key = (schedule.queue, schedule.name)
        # a tick is routine (DEBUG); INFO is kept for sync changes and the start of a
        # streak of skips (the job runs longer than its interval)
        if fired.outcome == "fired":
            log.debug("cron %s: tick %s queued as job %s", schedule.name, _iso(tick_ms),
                      fired.job_id)
        elif fired.outcome == "skipped":
            first_skip = self._last_outcome.get(key) != "skipped"
            log.log(logging.INFO if first_skip else logging.DEBUG,
                    "cron %s: tick %s skipped, singleton job %s still in flight%s",
                    schedule.name, _iso(tick_ms), fired.job_id,
                    " (further skips while it runs are logged at DEBUG)" if first_skip else "")
        elif fired.outcome in ("changed", "gone") and self._last_outcome.get(key) != fired.outcome:
            log.warning("cron %s: not fired by this supervisor: the schedule in Redis was %s "
                        "by a supervisor started later with other job files",
                        schedule.name, "changed" if fired.outcome == "changed" else "removed")
        self._last_outcome[key] = fired.outcome

    def _measure_clock(self) -> int:
        before = time.time()
        server_ms = self._store.server_time_ms()
        local_ms = int((before + time.time()) / 2 * 1000)
        self._clock_offset_ms = server_ms - local_ms
        return server_ms

    def _now_ms(self) -> int:
        return int(time.time() * 1000) + self._clock_offset_ms


def _iso(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def remove_schedule(store: Store, name: str, queues: tuple[str, ...] = QUEUES) -> list[str]:
    """Delete the schedule of job NAME from every queue holding one; returns those queues.
    A supervisor that still has the job stops firing it (``gone``) until it restarts."""
    removed = [queue for queue in queues if store.cron_remove(queue, name)]
    if not removed:
        raise CronScheduleNotFound(
            f"no cron schedule {name} in Redis (queues {', '.join(queues)}); "
            "`sandboxrunner cron` lists them")
    for queue in removed:
        log.info("cron schedule %s of %s removed by hand", name, queue)
    return removed
