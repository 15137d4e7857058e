"""A call checked before anything reaches Redis: the job is known, its data is JSON under
``max_data_size``, its timeout and retries are whole numbers, its singleton key is JSON.
The `PreparedJob` it makes is what `run_job` and `enqueue` send to Redis, and what each
cron schedule enqueues on every tick.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .config import Config
from .errors import InvalidJobData
from .job import PreparedJob, canonical_json, encode_data
from .keys import new_job_id
from .registry import JobSpec

MAX_SINGLETON_KEY_CHARS = 200


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
                 config: Config, *, what: str = "data") -> PreparedJob:
    """The call of job SPEC with DATA, checked, with a fresh job id; InvalidJobData if not
    (WHAT names the data in its message)."""
    data_json = encode_data(data, int(config.max_data_size * 1024 * 1024), what=what)
    timeout_ms = check_timeout(timeout if timeout is not None
                               else spec.timeout_ms or config.job_timeout)
    retries = check_retries(retries if retries is not None else spec.retries)
    backoff_json = json.dumps(spec.backoff) if spec.backoff else ""
    return PreparedJob(spec.queue, new_job_id(spec.queue), spec.name, data_json, timeout_ms,
                       singleton_key(spec, data), retries, backoff_json)
