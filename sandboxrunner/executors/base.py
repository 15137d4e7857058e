"""The Executor protocol and the pieces both executors share.

A supervisor owns one executor per queue. It hands over claimed jobs with ``submit`` and
learns of outcomes through the ``report`` callback it passed in, which it batches into
Redis. A job that calls run_job gets its client from the `MakeClient` factory the
supervisor passed in too. An executor enforces each job's deadline itself and reports a timeout as a
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
from ..job import ClaimedJob, Settlement
from ..job_errors import ErrorKind
from ..registry import JobSpec, Registry

Report = Callable[[Settlement], None]


class MakeClient(Protocol):
    """Makes the client a job's nested run_job uses (client.ClientFactory): the supervisor
    is handed one at start, so the worker side never imports the client itself."""

    def __call__(self) -> Any: ...

    async def aclose(self) -> None:
        """Close what the client made in this process holds for the running event loop."""
        ...


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

    def cancel(self, job_id: str) -> bool:
        """Stop JOB_ID if it runs here (asked by its record's cancel, cancel.lua): kill its
        child, or tell its thread (ctx.cancelled) and cancel its task; whether it ran here."""
        ...

    def shutdown(self, grace_ms: int) -> list[str]:
        """Stop; wait up to GRACE_MS for running jobs; return the ids still running."""
        ...

    def snapshot(self) -> dict[str, Any]: ...


# the names child.py and processes.py import; a settlement is built by `Settlement`'s own
failure = Settlement.failed
success = Settlement.returned


def timed_out(job_id: str, timeout_ms: int, how: str) -> Settlement:
    return Settlement.failed(job_id, ErrorKind.TIMEOUT, "JobTimeout",
                             f"ran past its time limit of {timeout_ms} ms; {how}")


def resolve(job: ClaimedJob, registry: Registry) -> tuple[JobSpec, Any] | Settlement:
    """The spec and decoded data of a claimed job, or the failure that refuses it."""
    try:
        spec = registry.get(job.name)
    except UnknownJob as exc:
        return Settlement.failed(job.id, ErrorKind.INVALID, "UnknownJob",
                                 f"this supervisor has no such job: {exc}")
    try:
        data = json.loads(job.data_json) if job.data_json else None
    except ValueError as exc:
        return Settlement.failed(job.id, ErrorKind.INVALID, "MalformedJob",
                                 f"job data is not valid JSON: {exc}")
    return spec, data


def deadline_after(timeout_ms: int) -> float:
    return time.monotonic() + timeout_ms / 1000
