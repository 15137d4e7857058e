"""Why a job failed, as data: the `ErrorKind` of a failure and the `ErrorInfo` that
travels as JSON in the job hash's ``error`` and ``errors`` fields and in a failed outcome's
body, from which the caller's exception (errors.py) is rebuilt. Shared by the worker side,
which writes it, and the caller side, which reads it (job.py holds the records it rides in).
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import traceback
from dataclasses import asdict, dataclass
from types import TracebackType

from .errors import JobCancelled, JobDeleted, JobError, JobFailed, JobTimeout


class ErrorKind(enum.StrEnum):
    """Why a job failed; the client maps TIMEOUT to JobTimeout, the rest to JobFailed."""

    RAISED = "raised"  # the handler raised
    TIMEOUT = "timeout"  # ran past its limit
    CRASHED = "crashed"  # its child process died
    STALLED = "stalled"  # its supervisor died too often
    INVALID = "invalid"  # bad message, unknown job, non-JSON result
    MEMORY = "memory"  # its child went over the memory limit
    CANCELLED = "cancelled"  # cancelled on request (job_control.py)
    DELETED = "deleted"  # deleted before it ran (job_control.py: delete_job)


# frames of these run a handler: a job's traceback starts below them (see _from_handler)
_RUNNER_DIRS = tuple(os.path.dirname(os.path.abspath(f)) + os.sep
                     for f in (__file__, asyncio.__file__))


def _from_handler(tb: TracebackType | None) -> TracebackType | None:
    """TB less its leading frames of the runner (this package calling the handler, and
    asyncio running it as a coroutine), so it starts at the user's handler; frames below
    the handler stay, ours included. All of TB when no frame is the user's."""
    start = tb
    while start is not None and start.tb_frame.f_code.co_filename.startswith(_RUNNER_DIRS):
        start = start.tb_next
    return start or tb


@dataclass(frozen=True)
class ErrorInfo:
    """Why a job failed, as the caller gets it: ``traceback`` is the handler's exception
    as text, from the handler down (the runner's frames above it are left out)."""

    kind: str
    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException, kind: ErrorKind = ErrorKind.RAISED) -> ErrorInfo:
        text = "".join(traceback.format_exception(type(exc), exc,
                                                  _from_handler(exc.__traceback__)))
        return cls(kind=kind.value, type=type(exc).__name__, message=str(exc), traceback=text)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> ErrorInfo:
        try:
            raw = json.loads(text)
            return cls(
                kind=str(raw.get("kind", ErrorKind.RAISED)),
                type=str(raw.get("type", "Error")),
                message=str(raw.get("message", "")),
                traceback=str(raw.get("traceback", "")),
            )
        except (ValueError, AttributeError):
            return cls(kind=ErrorKind.INVALID, type="Error", message=str(text))

    def to_exception(self, job_id: str, job_name: str) -> JobError:
        cls: type[JobError] = JobFailed
        label = job_name or job_id
        message = f"job {label} ({job_id}) failed: {self.type}: {self.message}"
        if self.kind == ErrorKind.TIMEOUT:
            cls, message = JobTimeout, f"job {label} ({job_id}) timed out: {self.message}"
        elif self.kind == ErrorKind.CANCELLED:
            cls, message = JobCancelled, f"job {label} ({job_id}) was cancelled: {self.message}"
        elif self.kind == ErrorKind.DELETED:
            cls, message = JobDeleted, f"job {label} ({job_id}) was {self.message}"
        return cls(
            message,
            job_id=job_id,
            job_name=job_name,
            error_type=self.type,
            error_message=self.message,
            remote_traceback=self.traceback,
        )

    @classmethod
    def cancelled(cls, how: str) -> ErrorInfo:
        """The error of a job cancelled on request; HOW it was stopped."""
        return cls(kind=ErrorKind.CANCELLED, type="JobCancelled", message=how)

    @classmethod
    def deleted(cls) -> ErrorInfo:
        """The error the waiting callers of a job deleted before it ran get."""
        return cls(kind=ErrorKind.DELETED, type="JobDeleted", message=(
            "deleted before it ran (delete_job or `sandboxrunner delete`): its record is gone"))

    @classmethod
    def stalled(cls, max_stalled: int) -> ErrorInfo:
        """The error of a job taken back from dead supervisors more than MAX_STALLED times."""
        return cls(kind=ErrorKind.STALLED, type="JobStalled", message=(
            f"the supervisor running this job stopped heartbeating (crashed or was killed) "
            f"more than max_stalled={max_stalled} time(s); the job is not run again"))
