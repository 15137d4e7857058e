"""Job control from the caller's side: get_job (a typed `JobInfo`), cancel, retry, delete,
run a cron job now (cron_control.run_now), and the progress a waiting caller is told about
(``on_progress``). `client.Client`'s methods delegate to the functions taking a client;
the public functions at the end (get_job, cancel, retry, delete_job, run_cron_now and
their asyncio twins) use the process's default client.

`cancel_job` (cancel) is one script (cancel.lua): a job not yet running is settled as
cancelled at once (callers waiting get `JobCancelled`); a running one is marked, and its
supervisor stops it within one heartbeat (heartbeat_ms, 1 s by default); a settled one is
left as it is. It returns a `CancelResult` that says which (truthy unless it had settled).

`remove_job` (delete_job) is one script (delete.lua): a settled job's record, log stream
and index entries go; a job not yet running leaves its queue at once and its waiting
callers get `JobDeleted`; a running one is refused (cancel it first). It returns a
`DeleteResult`.

`read_job` (get_job) reads one job in one round trip to the server holding its queue (its
record, and its score in the delayed set), plus one read of its supervisor's snapshot while it is
active (which child runs it: the snapshot is renewed every heartbeat, so a job that just
started shows no child pid for up to a heartbeat). Nothing is written.

Progress reaches a waiting caller on its reply channel as ``ID \\n progress \\n JSON``
(progress.lua); both listeners hand such a message to `ProgressWatchers.notify`, never to
the job's waiters. A callback runs on whichever thread reads the channel (sync callers) or
on the event loop (asyncio callers): keep it short.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidJobState, JobNotFound
from .job import Status
from .job_errors import ErrorInfo
from .keys import queue_of_job
from .progress import report_from_json

if TYPE_CHECKING:
    from .client import JobHandle
    from .client_control import Controls

DELAYED = "delayed"  # a job in the delayed set (a retry's backoff): JobInfo.status
PROGRESS = "progress"  # the status word of a progress message on a reply channel


@dataclass(frozen=True)
class JobProgress:
    """A job's latest ``ctx.progress``: FRACTION from 0 to 1 and its message."""

    job_id: str
    fraction: float
    message: str | None = None


@dataclass(frozen=True)
class JobInfo:
    """One job as Redis holds it. Times are epoch seconds (None: not yet)."""

    id: str
    queue: str
    name: str
    status: str  # queued, delayed, active, completed, failed, cancelled
    progress: JobProgress | None
    attempts: int  # deliveries so far (1 while the first attempt runs)
    retries: int  # attempts allowed after the first
    errors: tuple[ErrorInfo, ...]  # the error of each failed attempt, oldest first
    error: ErrorInfo | None  # the job's error once failed (or cancelled)
    result: Any  # the return value once completed, else None
    enqueued_at: float | None
    started_at: float | None  # of the latest attempt
    ended_at: float | None
    due_at: float | None  # when a delayed job is due
    supervisor: str | None  # the supervisor running it (or that last ran it)
    child_pid: int | None  # the child running it, in process mode
    stalled: int  # times taken back from a supervisor that died
    cancel_requested: bool = False  # cancelled while it runs: it settles as cancelled

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (`sandboxrunner job --json`)."""
        out = dict(vars(self))
        out["progress"] = None if self.progress is None else {
            "fraction": self.progress.fraction, "message": self.progress.message}
        out["errors"] = [vars(e) for e in self.errors]
        out["error"] = None if self.error is None else vars(self.error)
        return out


JOB_FIELDS = ("name", "status", "attempt", "retries", "errors", "error", "result", "enq",
              "start", "end", "sid", "progress", "stalled", "cancel")


def checked_job_id(job_id: Any) -> str:
    """JOB_ID if it has the shape of a job id; JobNotFound (one line) if not."""
    if not isinstance(job_id, str):
        raise JobNotFound(f"a job id is text such as 'default-<32 hex digits>', got "
                          f"{type(job_id).__name__}")
    try:
        queue_of_job(job_id)
    except ValueError as exc:
        raise JobNotFound(f"{exc}: a job id is QUEUE-ID, as enqueue() and `sandboxrunner "
                          "list` give it") from exc
    return job_id


def _missing(client: Controls, job_id: str, so: str = "") -> JobNotFound:
    """The error for JOB_ID that Redis has no record of; SO: what was not done."""
    return JobNotFound(f"no job {job_id}: never enqueued, or its record expired "
                       f"(result_ttl {client.config.result_ttl} ms)" + (f"; {so}" if so else ""))


def read_job(client: Controls, job_id: str) -> JobInfo:
    """The job JOB_ID as it stands; JobNotFound if Redis has no such job."""
    store = client.store
    fields, due_ms = store.job_view(checked_job_id(job_id), JOB_FIELDS)
    if not fields.get("status"):
        raise _missing(client, job_id)
    child_pid = None
    if fields["status"] == Status.ACTIVE and fields.get("sid"):
        child_pid = _child_of(store.supervisor_snapshot(fields["sid"]), job_id)
    return job_info(job_id, fields, due_ms, child_pid)


def job_info(job_id: str, fields: dict[str, str], due_ms: int | None,
             child_pid: int | None) -> JobInfo:
    """The JobInfo of a record's FIELDS (all text), its due time and child."""
    status = fields["status"]
    if status == Status.QUEUED and due_ms is not None:
        status = DELAYED
    settled_error = fields.get("error") if status not in (Status.COMPLETED,) else ""
    return JobInfo(
        id=job_id, queue=queue_of_job(job_id), name=fields.get("name", ""), status=status,
        progress=_progress(job_id, fields.get("progress", "")),
        attempts=_int(fields.get("attempt")), retries=_int(fields.get("retries")),
        errors=tuple(_errors(fields.get("errors", ""))),
        error=ErrorInfo.from_json(settled_error) if settled_error and status in (
            Status.FAILED, "cancelled") else None,
        result=_json(fields.get("result", "")) if status == Status.COMPLETED else None,
        enqueued_at=_seconds(fields.get("enq")), started_at=_seconds(fields.get("start")),
        ended_at=_seconds(fields.get("end")), due_at=None if due_ms is None else due_ms / 1000,
        supervisor=fields.get("sid") or None, child_pid=child_pid,
        stalled=_int(fields.get("stalled")),
        cancel_requested=status == Status.ACTIVE and fields.get("cancel") == "1")


def _child_of(snapshot: dict[str, Any] | None, job_id: str) -> int | None:
    for row in (snapshot or {}).get("running", []):
        if isinstance(row, dict) and row.get("id") == job_id:
            worker = str(row.get("worker", ""))
            return int(worker) if worker.isdigit() else None
    return None


def _progress(job_id: str, raw: str) -> JobProgress | None:
    report = report_from_json(job_id, "", raw) if raw else None
    return None if report is None else JobProgress(job_id, report.fraction, report.message)


def _errors(raw: str) -> list[ErrorInfo]:
    history = _json(raw)
    if not isinstance(history, list):
        return []
    return [ErrorInfo.from_json(json.dumps(e) if isinstance(e, dict) else json.dumps(
        {"message": str(e)})) for e in history]


def _json(raw: str) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw  # a record written by hand: shown as it is


def _int(raw: str | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


def _seconds(raw: str | None) -> float | None:
    ms = _int(raw)
    return ms / 1000 if ms else None


@dataclass(frozen=True)
class CancelResult:
    """What `cancel` did: OUTCOME is ``cancelled`` (it had not started: it never runs),
    ``cancelling`` (it runs: its supervisor stops it within a heartbeat, and it settles as
    cancelled) or ``settled`` (it had completed, failed or been cancelled: nothing
    changed); STATUS is the job's status before. False only when settled."""

    job_id: str
    outcome: str
    status: str

    def __bool__(self) -> bool:
        return self.outcome != "settled"


def cancel_job(client: Controls, job_id: str) -> CancelResult:
    """Cancel JOB_ID; JobNotFound if Redis has no such job (nothing changed)."""
    outcome, status = client.store.cancel(checked_job_id(job_id))
    if outcome == "missing":
        raise _missing(client, job_id, "nothing cancelled")
    return CancelResult(job_id, outcome, status)


@dataclass(frozen=True)
class DeleteResult:
    """What `delete_job` did: OUTCOME is ``deleted`` (it had settled: its record, log lines
    and index entries are gone) or ``dequeued`` (it had not run: it left its queue, and its
    waiting callers got JobDeleted); STATUS is the job's status before, NAME its job name."""

    job_id: str
    outcome: str
    status: str
    name: str = ""

    @property
    def message(self) -> str:
        """One line saying what was done (the CLI prints it; a page may show it)."""
        what = f"{self.job_id} ({self.name or '?'}, {self.status})"
        if self.outcome == "dequeued":
            return (f"deleted {what} before it ran: it left its queue, and callers waiting "
                    f"for it get JobDeleted")
        return f"deleted {what}: its record, log lines and index entries are gone"


def remove_job(client: Controls, job_id: str) -> DeleteResult:
    """Delete JOB_ID (delete.lua); JobNotFound for no such job, InvalidJobState for a
    running one (nothing changed either way)."""
    outcome, status, name = client.store.delete(checked_job_id(job_id))
    if outcome == "missing":
        raise _missing(client, job_id, "nothing deleted")
    if outcome == "running":
        raise InvalidJobState(f"job {job_id} ({name}) is running: cancel it first "
                              f"(`sandboxrunner cancel {job_id}`), then delete it once it "
                              f"settled; nothing changed")
    return DeleteResult(job_id, outcome, status, name)


def retry_job(client: Controls, job_id: str) -> str:
    """Run failed or cancelled JOB_ID again under its id (retry.lua); returns the id.
    JobNotFound for no such job, InvalidJobState for any other job (nothing changed)."""
    outcome, status, holder = client.store.retry(checked_job_id(job_id))
    if outcome == "missing":
        raise _missing(client, job_id, "nothing retried")
    if outcome == "refused":
        raise InvalidJobState(f"job {job_id} is {status}: only a failed or cancelled job "
                              f"can be retried; nothing changed")
    if outcome == "busy":
        raise InvalidJobState(f"job {job_id} is a singleton whose key job {holder} holds "
                              f"now: retry it once that one settles; nothing changed")
    return job_id


# -- progress for waiting callers ----------------------------------------------------------
ProgressCallback = Callable[[JobProgress], None]


class ProgressWatchers:
    """Who wants to hear of which job's progress, process-wide (both listeners of a
    process read reply channels on behalf of every caller)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, list[ProgressCallback]] = {}

    @contextmanager
    def watching(self, job_id: str,
                 callback: ProgressCallback | None) -> Iterator[Callable[[str], None]]:
        """CALLBACK hears JOB_ID's progress reports while the block runs; the block gets a
        function that makes it hear another job's too (the run a singleton call attached
        to, whose id is known only once enqueued)."""
        if callback is None:
            yield _hear_nothing
            return
        ids: list[str] = []

        def also(other_id: str) -> None:
            with self._lock:
                self._callbacks.setdefault(other_id, []).append(callback)
            ids.append(other_id)

        also(job_id)
        try:
            yield also
        finally:
            with self._lock:
                for watched in ids:
                    callbacks = self._callbacks.get(watched, [])
                    if callback in callbacks:
                        callbacks.remove(callback)
                    if not callbacks:
                        self._callbacks.pop(watched, None)

    def notify(self, job_id: str, body: str) -> None:
        """A progress message of JOB_ID came: call its watchers (a malformed one: none)."""
        with self._lock:
            callbacks = list(self._callbacks.get(job_id, ()))
        report = report_from_json(job_id, "", body) if callbacks else None
        if report is None:
            return
        for callback in callbacks:
            callback(JobProgress(job_id, report.fraction, report.message))


def _hear_nothing(_job_id: str) -> None:
    """`ProgressWatchers.watching`'s function when no callback listens."""


PROGRESS_WATCHERS = ProgressWatchers()



# -- the public functions: the process's default client (client.default_client) ------------
def get_job(job_id: str) -> JobInfo:
    """The job JOB_ID as it stands: status, progress, attempts, errors, times, where."""
    from .process_client import default_client

    return default_client().get_job(job_id)


async def aget_job(job_id: str) -> JobInfo:
    """The asyncio twin of get_job."""
    from .process_client import default_client

    return await default_client().aget_job(job_id)


def cancel(job_id: str) -> CancelResult:
    """Cancel the job with this id (`CancelResult` says what it did)."""
    from .process_client import default_client

    return default_client().cancel(job_id)


async def acancel(job_id: str) -> CancelResult:
    """The asyncio twin of cancel."""
    from .process_client import default_client

    return await default_client().acancel(job_id)


def delete_job(job_id: str) -> DeleteResult:
    """Delete the job with this id: a settled one's record, log lines and index entries,
    or a queued, delayed or throttled one before it runs; a running one is refused
    (InvalidJobState: cancel it first). `DeleteResult` says what it did."""
    from .process_client import default_client

    return default_client().delete_job(job_id)


async def adelete_job(job_id: str) -> DeleteResult:
    """The asyncio twin of delete_job."""
    from .process_client import default_client

    return await default_client().adelete_job(job_id)


def run_cron_now(job_name: str) -> str:
    """Run cron job JOB_NAME now, outside its schedule, as its next tick would (its queue,
    cron data and singleton rule), counted in its schedule as a manual run; its job id.
    Nobody waits for it: `get_result(id)` does."""
    from .process_client import default_client

    return default_client().run_cron_now(job_name)


async def arun_cron_now(job_name: str) -> str:
    """The asyncio twin of run_cron_now."""
    from .process_client import default_client

    return await default_client().arun_cron_now(job_name)


def retry(job_id: str) -> JobHandle:
    """Run a failed or cancelled job again, under the same id; its handle."""
    from .process_client import default_client

    return default_client().retry(job_id)


async def aretry(job_id: str) -> JobHandle:
    """The asyncio twin of retry."""
    from .process_client import default_client

    return await default_client().aretry(job_id)
