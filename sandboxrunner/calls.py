"""A call checked before anything reaches Redis: the job is known, its data is JSON under
``max_data_size``, its timeout and retries are whole numbers, its singleton key is JSON,
its ``delay`` (ms) or ``run_at`` (an aware datetime) and its idempotency key (``job_id``)
are well formed. The `PreparedJob` it makes is what `run_job` and `enqueue` send to Redis,
and what each cron schedule enqueues on every tick.

A ``run_at`` is sent as epoch ms and compared with the Redis server's clock by the enqueue
script (so every host agrees when a job is due): one more than job.RUN_AT_TOLERANCE_MS in
the past is refused there, as a mistake; one less is due at once (clocks differ a little).
An idempotency key KEY becomes the job id ``Q-KEY``: a second enqueue of the same id
attaches to the first job while its record exists (see enqueue.lua).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from .bulk import MAX_BATCH, PreparedBatch
from .config import Config
from .errors import InvalidJobData
from .job import PreparedJob, canonical_json, encode_data
from .keys import new_job_id, new_job_ids
from .registry import JobSpec

MAX_SINGLETON_KEY_CHARS = 200
JOB_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,100}")


@dataclass(frozen=True)
class Schedule:
    """When and as which id a call is enqueued: the per-call options of enqueue, run_job
    and arun_job (all None: now, with a fresh id)."""

    delay: int | None = None
    run_at: dt.datetime | None = None
    job_id: str | None = None


def check_delay(delay: Any) -> int:
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise InvalidJobData(f"delay must be a whole number of milliseconds >= 0, got "
                             f"{delay!r}")
    return delay


def check_run_at(run_at: Any) -> int:
    """RUN_AT as epoch ms; InvalidJobData unless an aware datetime."""
    if not isinstance(run_at, dt.datetime):
        raise InvalidJobData(f"run_at must be a datetime with a timezone, got {run_at!r}")
    if run_at.tzinfo is None or run_at.utcoffset() is None:
        raise InvalidJobData(f"run_at {run_at.isoformat()} is naive: give it a timezone "
                             "(datetime.now(timezone.utc) + timedelta(...))")
    return round(run_at.timestamp() * 1000)


def check_job_key(queue: str, key: Any) -> str:
    """The job id an idempotency key names (``Q-KEY``); InvalidJobData for a bad key."""
    if not isinstance(key, str) or not JOB_KEY_PATTERN.fullmatch(key):
        raise InvalidJobData(f"job_id {key!r} is not a valid idempotency key: use 1 to 100 "
                             "letters, digits and _ . : -")
    return f"{queue}-{key}"


def scheduled(job: PreparedJob, schedule: Schedule) -> PreparedJob:
    """JOB with SCHEDULE's due time and id applied, checked."""
    if schedule.delay is None and schedule.run_at is None and schedule.job_id is None:
        return job  # the plain call: nothing to apply
    if schedule.delay is not None and schedule.run_at is not None:
        raise InvalidJobData("give delay or run_at, not both")
    delay_ms = check_delay(schedule.delay) if schedule.delay is not None else None
    run_at_ms = check_run_at(schedule.run_at) if schedule.run_at is not None else None
    job_id = (check_job_key(job.queue, schedule.job_id) if schedule.job_id is not None
              else job.job_id)
    return replace(job, job_id=job_id, delay_ms=delay_ms, run_at_ms=run_at_ms)


def singleton_key(spec: JobSpec, data: Any) -> str:
    """The Redis-side singleton key of a call: '' when the job is not a singleton."""
    if spec.singleton is None or spec.singleton is False:
        return ""
    if spec.singleton is True:
        return spec.name
    try:
        key = spec.singleton(data)
    except Exception as exc:
        raise InvalidJobData(f"singleton key function of job {spec.name!r} raised "
                             f"{type(exc).__name__}: {exc}") from exc
    try:
        text = canonical_json(key)
    except (TypeError, ValueError) as exc:
        raise InvalidJobData(f"singleton key of job {spec.name!r} is not JSON-serialisable: "
                             f"{exc}") from exc
    if len(text) > MAX_SINGLETON_KEY_CHARS:  # keep Redis key names short
        text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return f"{spec.name}:{text}"


def check_retries(retries: Any) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidJobData(f"retries must be a whole number >= 0, got {retries!r}")
    return retries


def check_timeout(timeout: Any) -> int:
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise InvalidJobData(f"timeout must be a positive whole number of milliseconds, "
                             f"got {timeout!r}")
    return timeout


def prepare_call(spec: JobSpec, data: Any, timeout: int | None, retries: int | None,
                 config: Config, *, what: str = "data",
                 schedule: Schedule | None = None) -> PreparedJob:
    """The call of job SPEC with DATA, checked, with a fresh job id (or SCHEDULE's);
    InvalidJobData if not (WHAT names the data in its message)."""
    data_json = encode_data(data, int(config.max_data_size * 1024 * 1024), what=what)
    timeout_ms = check_timeout(timeout if timeout is not None
                               else spec.timeout_ms or config.job_timeout)
    retries = check_retries(retries if retries is not None else spec.retries)
    backoff_json = json.dumps(spec.backoff) if spec.backoff else ""
    job = PreparedJob(spec.queue, new_job_id(spec.queue), spec.name, data_json, timeout_ms,
                      singleton_key(spec, data), retries, backoff_json)
    return scheduled(job, schedule) if schedule is not None else job


def prepare_batch(spec: JobSpec, items: Any, timeout: int | None, retries: int | None,
                  config: Config) -> PreparedBatch:
    """ITEMS (one job's data each) as calls of job SPEC, every one checked; InvalidJobData
    naming the first bad one (nothing is enqueued)."""
    if not isinstance(items, (list, tuple)):
        raise InvalidJobData(f"enqueue_many of job {spec.name!r} takes a list of job data, "
                             f"one item per job, got {type(items).__name__}; nothing was "
                             "enqueued")
    if len(items) > MAX_BATCH:
        raise InvalidJobData(f"enqueue_many of job {spec.name!r} takes at most {MAX_BATCH} "
                             f"jobs a call, got {len(items)}: split the batch; nothing was "
                             "enqueued")
    timeout_ms = check_timeout(timeout if timeout is not None
                               else spec.timeout_ms or config.job_timeout)
    retries = check_retries(retries if retries is not None else spec.retries)
    max_bytes = int(config.max_data_size * 1024 * 1024)
    single = spec.singleton is not None and spec.singleton is not False
    data, keys = [], []
    for index, item in enumerate(items):
        try:
            data.append(encode_data(item, max_bytes))
            if single:
                keys.append(singleton_key(spec, item))
        except InvalidJobData as exc:
            raise InvalidJobData(f"enqueue_many of job {spec.name!r}: item {index} of the "
                                 f"batch: {exc}; nothing was enqueued") from None
    return PreparedBatch(spec.queue, spec.name, timeout_ms, retries,
                         json.dumps(spec.backoff) if spec.backoff else "", single,
                         tuple(new_job_ids(spec.queue, len(data))), tuple(data), tuple(keys))


def cron_call(spec: JobSpec, config: Config) -> PreparedJob:
    """The run of cron job SPEC, as run_job would prepare it (each tick, and each manual
    run, enqueues it under a fresh id); InvalidJobData if its cron data will not do."""
    assert spec.cron is not None
    return prepare_call(spec, spec.cron.data, None, None, config, what="cron data")
