"""The job's records, one per leg of its trip, and their wire forms. The only wire format
is JSON: nothing read from Redis is ever unpickled. Why a job failed (`ErrorKind`,
`ErrorInfo`) is job_errors.py's.

How a job travels; its records are named by the leg they travel, as CPython's process
pool names its work, call and result items (beside each arrow: what carries it)::

  caller: run_job, enqueue (client.py), or a cron tick (cron.py: a CronRun)
     | PreparedJob     enqueue.lua or cron_fire.lua; the enqueue replies an EnqueueResult
     v
  Redis: the job hash (below) and its queue's wait list
     | ClaimedJob      claim.lua, to a supervisor's fetch thread (fetching.py)
     v
  executor: a thread, or a child, which gets it over its pipe (a RUN frame)
     | JobRecord       ClaimedJob.record(): ctx.job, the job as its handler sees it
     v
  the handler returns or raises
     | Settlement      report(), or a child's DONE frame, to the supervisor's settle thread
     v
  Redis: finish.lua settles the job hash and publishes the outcome
     | Outcome         the caller's reply channel (listener.py), or attach.lua
     v
  caller: Outcome.value() returns the result or raises the job's error

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
  progress JSON of the latest ctx.progress report, {"fraction": F, "message": M}
           (progress.lua; absent until the job reports)
  cancel   1 once a cancel was asked while it ran (cancel.lua): it settles as cancelled
  reruns   times `retry` ran it again after it failed or was cancelled (retry.lua: the
           same id; attempt and errors go on, fails starts afresh)
  due      ms it is due, while ``delayed`` (a delay, a run_at or a retry's backoff) or
           ``throttled`` (its rate limit frees a slot)

An enqueue writes only name, data, timeout, status and enq, plus reply, skey, retries and
backoff when they are not at their defaults: an absent field reads as its default (''
for reply, skey and backoff, 0 for every count), so each waiting job costs fewer bytes and
its enqueue less Redis time (write_record in scripts/_lib.lua).

When a job settles, the finish script publishes ``ID \\n STATUS \\n BODY`` on the caller's
reply channel, where BODY is the result JSON or the error JSON, so a waiting caller needs
no second read. While it runs, progress.lua publishes ``ID \\n progress \\n JSON`` there
too: a report, not an outcome (the listeners hand it to job_control.py).
"""

from __future__ import annotations

import enum
import json
import sys
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from .errors import InvalidJobData
from .job_errors import ErrorInfo, ErrorKind


class Status(enum.StrEnum):
    QUEUED = "queued"
    DELAYED = "delayed"  # in the delayed set: a delay, a run_at or a retry's backoff
    THROTTLED = "throttled"  # held back by its rate limit, in the throttled set
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})



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


# made once: json.dumps with options builds an encoder on every call
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_CANONICAL = json.JSONEncoder(separators=(",", ":"), allow_nan=False, sort_keys=True)
# The C encoder behind _COMPACT, made once too: JSONEncoder.encode makes one per call, half
# the time of encoding a small dict. Without markers (None) it keeps no state between
# calls, so threads may share it; data that contains itself then ends in RecursionError
# instead of the circular-reference check.
_COMPACT_C = (c_make_encoder(None, _COMPACT.default, encode_basestring_ascii, None, ":", ",",
                             False, False, False) if c_make_encoder is not None else None)


def compact_json(value: Any) -> str:
    """json.dumps(VALUE, separators=(",", ":"), allow_nan=False); TypeError or ValueError
    for what JSON cannot carry (data containing itself included)."""
    if _COMPACT_C is None:
        return _COMPACT.encode(value)
    try:
        return "".join(_COMPACT_C(value, 0))
    except RecursionError:
        raise ValueError("it contains itself (a circular reference) or nests deeper than "
                         f"{sys.getrecursionlimit()} levels") from None


def encode_data(data: Any, max_bytes: int, *, what: str = "data") -> str:
    """JSON text of job data; refuses what JSON can't carry or what is too large."""
    try:
        text = compact_json(data)
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
    return compact_json(value)


def canonical_json(value: Any) -> str:
    """Key-order independent JSON, used to compare singleton keys."""
    return _CANONICAL.encode(value)


def text(value: Any) -> str:
    """A Redis reply as text ('' for nil)."""
    if value is None:
        return ""
    # errors="replace": a malformed entry written by hand must not crash its reader
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _whole(value: Any) -> int | None:
    """VALUE as an int, or None when it is not a whole number (a field written by hand)."""
    if isinstance(value, int):
        return value
    try:
        return int(text(value))
    except ValueError:
        return None


# -- caller -> Redis ----------------------------------------------------------------------
RUN_AT_TOLERANCE_MS = 10_000  # how far in the past a run_at may be (README: Delayed jobs)
RUN_AT_PAST = 2  # enqueue.lua's "attached" flag when it refused a run_at in the past


@dataclass(frozen=True)
class PreparedJob:
    """A call checked and ready to enqueue (calls.py prepares it for run_job, enqueue and
    each cron schedule)."""

    queue: str
    job_id: str
    name: str
    data_json: str
    timeout_ms: int
    singleton_key: str = ""  # '' = not a singleton
    retries: int = 0
    backoff_json: str = ""
    delay_ms: int | None = None  # due this long after the server's now (None: at once)
    run_at_ms: int | None = None  # due at this epoch ms by the server's clock

    def script_args(self) -> tuple[str, str, str, int, str, int, str]:
        """The job's block of ARGV, in the order enqueue.lua and cron_fire.lua take it."""
        return (self.job_id, self.name, self.data_json, self.timeout_ms, self.singleton_key,
                self.retries, self.backoff_json)

    def schedule_args(self) -> tuple[str, str, int] | tuple[()]:
        """The due-time block of enqueue.lua's ARGV: delay ms, run_at ms ('' = not given),
        and how far in the past a run_at may be; none at all for a job due now (the
        plain call sends no more than it did before delays existed)."""
        if self.delay_ms is None and self.run_at_ms is None:
            return ()
        return ("" if self.delay_ms is None else str(self.delay_ms),
                "" if self.run_at_ms is None else str(self.run_at_ms), RUN_AT_TOLERANCE_MS)


@dataclass(frozen=True)
class EnqueueResult:
    """The enqueue script's reply: the job the caller waits for (another's when it
    attached to an in-flight singleton or to its own earlier try), and how many
    supervisors of the queue heartbeat within a lease."""

    job_id: str
    attached: bool
    live_supervisors: int

    @classmethod
    def from_reply(cls, reply: list[Any]) -> EnqueueResult:
        """The reply, or InvalidJobData when the script refused a run_at in the past."""
        if int(reply[1]) == RUN_AT_PAST:
            raise InvalidJobData(
                f"run_at is {int(reply[3]) / 1000:.1f} s in the past by the Redis server's "
                f"clock (tolerated: {RUN_AT_TOLERANCE_MS / 1000:g} s): nothing was enqueued; "
                "give a future time, or delay=0 to run it now")
        return cls(text(reply[0]), bool(int(reply[1])), int(reply[2]))


@dataclass(frozen=True)
class CronRun:
    """One tick of a schedule, as the scheduler asks `cron_fire` to handle it: the run
    it enqueues is CALL, prepared like any other call."""

    pattern: str
    tz: str
    tick_ms: int
    next_ms: int
    call: PreparedJob


@dataclass(frozen=True)
class CronFired:
    """What `cron_fire` did: an outcome from the script's header, a job id, server ms."""

    outcome: str
    job_id: str
    server_ms: int


# -- Redis -> supervisor -> executor or child ---------------------------------------------
class ClaimedJob(NamedTuple):
    """A job as the claim script hands it to a supervisor. A tuple: the pipe to a child
    carries it as it is, pickled as cheaply as a plain tuple."""

    id: str
    name: str  # '' for a malformed queue entry that has no job record
    data_json: str
    timeout_ms: int
    attempt: int
    enqueued_at_ms: int
    started_at_ms: int
    problem: str = ""  # why the record is malformed ('' = it is not): fail, never run it

    @classmethod
    def from_reply(cls, f: list[Any]) -> ClaimedJob:
        """The job of the claim script's 7 fields (id, name, data, timeout, attempt, enq
        ms, start ms); a timeout written by hand that is not a positive whole number of
        ms makes it malformed."""
        timeout_ms = _whole(f[3])
        problem = ""
        if f[1] and (timeout_ms is None or timeout_ms <= 0):
            problem = (f"the job record's timeout is not a positive whole number of ms: "
                       f"{text(f[3])[:100]!r}")
        return cls(text(f[0]), text(f[1]), text(f[2]), max(timeout_ms or 0, 0), int(f[4]),
                   _whole(f[5]) or 0, int(f[6]), problem)

    def record(self, queue: str, data: Any) -> JobRecord:
        """The handler's ``ctx.job`` for this job with its decoded DATA."""
        return JobRecord(id=self.id, name=self.name, data=data, queue=queue,
                         attempt=self.attempt, enqueued_at=self.enqueued_at_ms / 1000,
                         started_at=self.started_at_ms / 1000, timeout_ms=self.timeout_ms)


def claimed_batch(flat: list[Any]) -> tuple[list[ClaimedJob], int]:
    """The claim script's reply: its jobs, and the ms until the next retry is due (-1:
    none delayed), which comes first, before 7 fields a job."""
    return [ClaimedJob.from_reply(flat[i : i + 7]) for i in range(1, len(flat), 7)], int(flat[0])


# -- executor or child -> supervisor -> Redis ---------------------------------------------
@dataclass(frozen=True)
class Settlement:
    """An outcome a supervisor reports: body is result JSON or ErrorInfo JSON."""

    job_id: str
    status: Status
    body: str

    @classmethod
    def returned(cls, job_id: str, value: Any) -> Settlement:
        """The handler returned VALUE: completed, or failed when VALUE is not JSON."""
        try:
            return cls(job_id, Status.COMPLETED, encode_result(value))
        except (TypeError, ValueError) as exc:
            return cls.failed(job_id, ErrorKind.INVALID, "ResultNotJSON",
                              f"the handler's return value is not JSON-serialisable: {exc}")

    @classmethod
    def raised(cls, job_id: str, exc: BaseException) -> Settlement:
        """The handler raised EXC."""
        return cls.failed_with(job_id, ErrorInfo.from_exception(exc))

    @classmethod
    def failed(cls, job_id: str, kind: ErrorKind, type_name: str, message: str,
               tb: str = "") -> Settlement:
        """The job failed for KIND, as TYPE_NAME: MESSAGE."""
        info = ErrorInfo(kind=kind.value, type=type_name, message=message, traceback=tb)
        return cls.failed_with(job_id, info)

    @classmethod
    def failed_with(cls, job_id: str, info: ErrorInfo) -> Settlement:
        return cls(job_id, Status.FAILED, info.to_json())

    @classmethod
    def cancelled(cls, job_id: str, how: str) -> Settlement:
        """The job was stopped on request, HOW (finish.lua never retries it)."""
        return cls(job_id, Status.CANCELLED, ErrorInfo.cancelled(how).to_json())


# -- Redis -> caller ----------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """A settled job as a caller sees it."""

    job_id: str
    status: str
    body: str  # result JSON when completed, ErrorInfo JSON when failed or cancelled
    name: str = ""

    @classmethod
    def from_reply(cls, message: bytes | str) -> Outcome:
        """The outcome a reply channel's message carries (ValueError if malformed)."""
        job_id, status, body = text(message).split("\n", 2)
        return cls(job_id=job_id, status=status, body=body)

    @classmethod
    def from_attach(cls, job_id: str, reply: list[Any]) -> Outcome | str:
        """The attach script's reply: the outcome once settled, else the job's status
        ('' = no such job)."""
        status, body, name = (text(x) for x in reply)
        if status in TERMINAL_STATUSES:
            return cls(job_id=job_id, status=status, body=body, name=name)
        return status

    def named(self, name: str) -> Outcome:
        """This outcome, naming its job NAME if it names none."""
        return self if self.name else Outcome(self.job_id, self.status, self.body, name)

    def value(self) -> Any:
        """The handler's return value, or raise the job's error."""
        if self.status == Status.COMPLETED:
            return json.loads(self.body) if self.body else None
        raise ErrorInfo.from_json(self.body).to_exception(self.job_id, self.name)
