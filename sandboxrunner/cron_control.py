"""Cron schedules changed by hand, from the caller's side (the CLI's `cron --run` and
`--remove`, `run_cron_now`, the dashboard): run a cron job now, outside its schedule, and
delete a schedule. cron.py (the scheduler, on the worker side) documents the schedules'
Redis layout; nothing here loads croniter or imports the scheduler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from .calls import cron_call
from .config import Config
from .errors import CronScheduleNotFound, InvalidJobState
from .keys import QUEUES, new_job_id
from .registry import Registry
from .store import Store

log = logging.getLogger(__name__)


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
