"""The Executor protocol and the pieces both executors share.

A supervisor owns one executor per queue. It hands over claimed jobs with ``submit`` and
learns of outcomes through the ``report`` callback it passed in, which it batches into
Redis. An executor enforces each job's deadline itself and reports a timeout as a
failure; the late outcome of a timed-out job is dropped by the finish script, since the
job has already left the supervisor's lease.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import UnknownJob
from ..job import ErrorInfo, ErrorKind, JobRecord, Status, encode_result
from ..registry import JobSpec, Registry
from ..store import ClaimedJob, Settlement

Report = Callable[[Settlement], None]


@dataclass
class RunningJob:
    """A job an executor is running, as the dashboard shows it."""

    id: str
    name: str
    queue: str
    started_at: float  # epoch seconds
    timeout_ms: int
    worker: str  # "thread" or the child's pid


class Executor(Protocol):
    def submit(self, job: ClaimedJob) -> None: ...

    def admit_inline(self, job: ClaimedJob) -> Callable[[], None] | None:
        """Take JOB to run on the calling thread: the call that runs and reports it, or
        None when this executor cannot (the job then goes through ``submit``)."""
        ...

    def free_slots(self) -> int: ...

    def jobs_in_hand(self) -> int:
        """Jobs running or waiting for a worker in this executor."""
        ...

    def wait_for_slot(self, timeout_s: float) -> bool: ...

    def running(self) -> list[RunningJob]: ...

    def shutdown(self, grace_ms: int) -> list[str]:
        """Stop; wait up to GRACE_MS for running jobs; return the ids still running."""
        ...

    def snapshot(self) -> dict[str, Any]: ...


def job_record(job: ClaimedJob, queue: str, data: Any) -> JobRecord:
    return JobRecord(
        id=job.id,
        name=job.name,
        data=data,
        queue=queue,
        attempt=job.attempt,
        enqueued_at=job.enqueued_at_ms / 1000,
        started_at=job.started_at_ms / 1000,
        timeout_ms=job.timeout_ms,
    )


def failure(job_id: str, kind: ErrorKind, type_name: str, message: str,
            tb: str = "") -> Settlement:
    info = ErrorInfo(kind=kind.value, type=type_name, message=message, traceback=tb)
    return Settlement(job_id, Status.FAILED, info.to_json())


def raised(job_id: str, exc: BaseException) -> Settlement:
    return Settlement(job_id, Status.FAILED, ErrorInfo.from_exception(exc).to_json())


def success(job_id: str, value: Any) -> Settlement:
    """A completed settlement, or a failure when the value is not JSON."""
    try:
        return Settlement(job_id, Status.COMPLETED, encode_result(value))
    except (TypeError, ValueError) as exc:
        return failure(job_id, ErrorKind.INVALID, "ResultNotJSON",
                       f"the handler's return value is not JSON-serialisable: {exc}")


def timed_out(job_id: str, timeout_ms: int, how: str) -> Settlement:
    return failure(job_id, ErrorKind.TIMEOUT, "JobTimeout",
                   f"ran past its time limit of {timeout_ms} ms; {how}")


def resolve(job: ClaimedJob, registry: Registry) -> tuple[JobSpec, Any] | Settlement:
    """The spec and decoded data of a claimed job, or the failure that refuses it."""
    try:
        spec = registry.get(job.name)
    except UnknownJob as exc:
        return failure(job.id, ErrorKind.INVALID, "UnknownJob",
                       f"this supervisor has no such job: {exc}")
    try:
        data = json.loads(job.data_json) if job.data_json else None
    except ValueError as exc:
        return failure(job.id, ErrorKind.INVALID, "MalformedJob",
                       f"job data is not valid JSON: {exc}")
    return spec, data


def deadline_after(timeout_ms: int) -> float:
    return time.monotonic() + timeout_ms / 1000
