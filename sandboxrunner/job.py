"""The job record and the only wire format: JSON.

A job is a Redis hash (key ``keys.Keys.job``) with these fields, all strings:

  name     registered job name           data     JSON text of the input
  timeout  run-time limit in ms          status   a `Status` value
  enq      enqueue time (server ms)      start    start of the current attempt (ms)
  end      settle time (ms)              attempt  deliveries so far (1 on first run)
  stalled  times taken back from a dead supervisor
  handed_back  times a stopping supervisor handed it back (not a crash; absent if never)
  sid      supervisor that holds it      reply    space-separated client ids to notify
  skey     singleton key it holds        result   JSON text of the return value
  error    JSON text of an `ErrorInfo`   retries  attempts allowed after the first
  backoff  JSON text of the retry backoff
  fails    failed attempts so far        errors   JSON list of every failed attempt's error

Nothing here is ever unpickled: data, results and errors are JSON. When a job settles,
the finish script publishes ``ID \\n STATUS \\n BODY`` on the caller's reply channel,
where BODY is the result JSON or the error JSON, so a waiting caller needs no second read.
"""

from __future__ import annotations

import asyncio
import enum
import json
import os
import traceback
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from .errors import InvalidJobData, JobError, JobFailed, JobTimeout


class Status(enum.StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED})


class ErrorKind(enum.StrEnum):
    """Why a job failed; the client maps TIMEOUT to JobTimeout, the rest to JobFailed."""

    RAISED = "raised"  # the handler raised
    TIMEOUT = "timeout"  # ran past its limit
    CRASHED = "crashed"  # its child process died
    STALLED = "stalled"  # its supervisor died too often
    INVALID = "invalid"  # bad message, unknown job, non-JSON result
    MEMORY = "memory"  # its child went over the memory limit


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
        cls = JobTimeout if self.kind == ErrorKind.TIMEOUT else JobFailed
        label = job_name or job_id
        message = f"job {label} ({job_id}) failed: {self.type}: {self.message}"
        if self.kind == ErrorKind.TIMEOUT:
            message = f"job {label} ({job_id}) timed out: {self.message}"
        return cls(
            message,
            job_id=job_id,
            job_name=job_name,
            error_type=self.type,
            error_message=self.message,
            remote_traceback=self.traceback,
        )


@dataclass(frozen=True)
class JobRecord:
    """What a handler sees as ``ctx.job``. Times are epoch seconds."""

    id: str
    name: str
    data: Any
    queue: str
    attempt: int
    enqueued_at: float
    started_at: float
    timeout_ms: int


def encode_data(data: Any, max_bytes: int, *, what: str = "data") -> str:
    """JSON text of job data; refuses what JSON can't carry or what is too large."""
    try:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidJobData(f"job {what} is not JSON-serialisable: {exc}") from exc
    if len(text) > max_bytes:
        raise InvalidJobData(
            f"job {what} is {len(text)} bytes of JSON, over the limit of {max_bytes} bytes "
            "(config max_data_size)"
        )
    return text


def encode_result(value: Any) -> str:
    """JSON text of a return value; raises TypeError/ValueError for non-JSON values."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def canonical_json(value: Any) -> str:
    """Key-order independent JSON, used to compare singleton keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Outcome:
    """A settled job as a caller sees it."""

    job_id: str
    status: str
    body: str  # result JSON when completed, ErrorInfo JSON when failed
    name: str = ""

    @classmethod
    def from_reply(cls, message: bytes | str) -> Outcome:
        job_id, status, body = _s(message).split("\n", 2)
        return cls(job_id=job_id, status=status, body=body)

    def value(self) -> Any:
        """The handler's return value, or raise the job's error."""
        if self.status == Status.COMPLETED:
            return json.loads(self.body) if self.body else None
        raise ErrorInfo.from_json(self.body).to_exception(self.job_id, self.name)
