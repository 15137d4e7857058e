"""Running a cron job by hand, outside its schedule: the caller side of cron (the CLI's
``cron --run``, `run_cron_now`, the web dashboard's "run now"), apart from the scheduler
(cron.py), so a caller never imports the worker side.

The run is prepared as a tick's (`cron_call`: its queue, its cron data, its singleton
rule) and enqueued by cron_run_now.lua, which counts it in the schedule as a manual run
(``manual_runs``, ``manual_at``, ``manual_job``) and leaves its ticks alone; a singleton
whose previous run is in flight is not run again, as a tick would skip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from .calls import prepare_call
from .config import Config
from .errors import CronScheduleNotFound, InvalidJobState
from .job import PreparedJob
from .keys import new_job_id
from .registry import JobSpec, Registry
from .store import Store

log = logging.getLogger(__name__)


def cron_call(spec: JobSpec, config: Config) -> PreparedJob:
    """The run of cron job SPEC, as run_job would prepare it (each tick, and each manual
    run, enqueues it under a fresh id); InvalidJobData if its cron data will not do."""
    assert spec.cron is not None
    return prepare_call(spec, spec.cron.data, None, None, config, what="cron data")


@dataclass(frozen=True)
class ManualRun:
    """A cron job run by hand (`run_now`): its job id, its queue, and how many supervisors
    of that queue heartbeat within a lease (0: it waits for one)."""

    job_id: str
    queue: str
    live_supervisors: int


def run_now(store: Store, registry: Registry, config: Config, name: str) -> ManualRun:
    """Enqueue cron job NAME now, outside its schedule, as its next tick would (its queue,
    its cron data, its singleton rule), counted in its schedule as a manual run; its ticks
    go on as scheduled. UnknownJob, CronScheduleNotFound (no cron, or not synced into Redis
    yet) or InvalidJobState (a singleton's run is in flight): nothing was enqueued."""
    spec = registry.get(name)
    if spec.cron is None:
        raise CronScheduleNotFound(
            f"job {name} has no cron schedule (no `cron = ...` in {spec.source}); "
            f"`sandboxrunner run {name}` runs it now")
    call = replace(cron_call(spec, config), job_id=new_job_id(spec.queue))
    outcome, job_id, live = store.cron_run_now(call)
    if outcome == "missing":
        raise CronScheduleNotFound(
            f"no cron schedule {name} in Redis (queue {spec.queue}): a supervisor syncs it "
            f"when it starts (`sandboxrunner start`); nothing queued")
    if outcome == "busy":
        raise InvalidJobState(
            f"cron job {name} is a singleton whose run {job_id} is still in flight: nothing "
            f"queued, as its next tick would skip; run it again once that one settles")
    log.info("cron %s: run by hand as job %s", name, job_id)
    return ManualRun(job_id, spec.queue, live)
