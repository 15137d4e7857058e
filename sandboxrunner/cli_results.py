"""`sandboxrunner logs` and `sandboxrunner result`: one job's log lines and outcome, read
from Redis. Both only read: they never start the embedded server.

Either takes a job's full id or the start of one, such as the 8 hex digits `top` shows,
found as job_lookup.py finds it (among the ids Redis lists anyway, never by scanning
keys; it must match exactly one).

`logs` prints each line as ``HH:MM:SS LABEL message {data}`` (LABEL as `top` shows it,
`joblog.display_level`) and ends with a ``job`` line: the job's state, or with --follow
its outcome once it settles. A followed job that waits with no supervisor serving its
queue says so once, and keeps following.
"""

from __future__ import annotations

import json
import time

import typer

from . import errors
from .cli_support import (
    PROJECT_OPTION,
    REDIS_URL_OPTION,
    existing_redis_url,
    load_cli_config,
    reports_errors,
)
from .config import Config, redact_url
from .job import TERMINAL_STATUSES, Status
from .job_errors import ErrorInfo, ErrorKind
from .job_lookup import resolve_job_id
from .joblog import display_level, read_job_log
from .store import Store

FOLLOW_POLL_S = 0.25
# Lines are written in batches (joblog.FLUSH_INTERVAL_S): the last may land just after the
# job settles, so a follower reads once more this long after it sees the outcome.
LAST_LINES_WAIT_S = 0.2
RECORD_FIELDS = ("status", "name", "start", "end", "error", "attempt", "due")

JOB_ID_ARGUMENT = typer.Argument(
    ..., metavar="ID",
    help="The job's id, as `run`, enqueue() or `top --json` give it, or its start: the "
         "8 hex digits `top` shows are enough when no other listed job shares them.")


# -- finding the job: job_lookup.resolve_job_id ----------------------------------------


def _record(store: Store, job_id: str) -> dict[str, str]:
    return dict(zip(RECORD_FIELDS, store.job_fields(job_id, *RECORD_FIELDS), strict=True))


def _not_found(store: Store, job_id: str) -> errors.JobNotFound:
    return errors.JobNotFound(
        f"no job {job_id} in Redis at {redact_url(store.url)}: never enqueued there, or "
        f"its record expired (result_ttl {store.config.result_ttl} ms)")


# -- describing it -----------------------------------------------------------------------


def _clock(epoch_ms: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch_ms / 1000))


def _seconds(ms: int) -> str:
    return f"{ms / 1000:.2f} s"


def _ms(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _outcome(record: dict[str, str]) -> str:
    took = _seconds(max(_ms(record["end"]) - _ms(record["start"]), 0))
    if record["status"] == Status.COMPLETED:
        return f"completed in {took}"
    error = ErrorInfo.from_json(record["error"] or "{}")
    first_line = (error.message.strip().splitlines() or [""])[0]
    if error.kind == ErrorKind.TIMEOUT:
        return f"timed out: {first_line} (ran {took})"
    return f"failed: {error.type}: {first_line} (ran {took})"


def _state(store: Store, job_id: str, record: dict[str, str]) -> str:
    """What the job is doing, for its `job` line: when a delayed or throttled one is due,
    and that nobody serves its queue when nobody does."""
    status, queue = record["status"], job_id.partition("-")[0]
    now_ms = store.server_time_ms()
    if status == Status.ACTIVE:
        ran_ms = now_ms - _ms(record["start"])
        return f"running for {_seconds(max(ran_ms, 0))} (attempt {record['attempt'] or 1})"
    state = f"{status} on {queue!r}"
    if status in (Status.DELAYED, Status.THROTTLED) and _ms(record["due"]):
        due_ms = _ms(record["due"])
        state += f", due at {_clock(due_ms)} (in {_seconds(max(due_ms - now_ms, 0))})"
    if store.live_supervisors(queue) == 0:
        state += (f"; no live supervisor serves queue {queue!r}: it runs when one starts "
                  "(`sandboxrunner start`)")
    return state


def _job_line(job_id: str, record: dict[str, str], text: str) -> str:
    settled = record["status"] in TERMINAL_STATUSES and _ms(record["end"])
    stamp = _clock(_ms(record["end"]) if settled else time.time() * 1000)
    return f"{stamp} job   {job_id} {record['name'] or '?'} {text}"


# -- printing its lines ------------------------------------------------------------------


def _print_new_lines(store: Store, job_id: str, after: str) -> str:
    """Print the job's log lines after stream id AFTER; returns the last one printed."""
    for entry_id, line in read_job_log(store, job_id, after):
        after = entry_id
        label = display_level(str(line.get("level", "info")), str(line.get("source", "")))
        extra = f" {json.dumps(line['data'])}" if "data" in line else ""
        typer.echo(f"{_clock(float(line.get('ts', 0)) * 1000)} {label:5} "
                   f"{line.get('msg', '')}{extra}")
        if isinstance(line.get("err"), dict):
            typer.echo(str(line["err"].get("traceback", "")).rstrip("\n"))
    return after


def _follow(store: Store, job_id: str, after: str, record: dict[str, str]) -> None:
    """Print new lines until the job settles, then its outcome."""
    said_waiting = False
    while record["status"] not in TERMINAL_STATUSES:
        if record["status"] == "":
            typer.echo(_job_line(job_id, record, "record expired while followed"))
            return
        if not said_waiting and record["status"] in (Status.QUEUED, Status.DELAYED,
                                                     Status.THROTTLED):
            state = _state(store, job_id, record)
            said_waiting = "no live supervisor" in state
            if said_waiting:
                typer.echo(_job_line(job_id, record, state))
        time.sleep(FOLLOW_POLL_S)
        after = _print_new_lines(store, job_id, after)
        record = _record(store, job_id)
    time.sleep(LAST_LINES_WAIT_S)
    _print_new_lines(store, job_id, after)
    typer.echo(_job_line(job_id, record, _outcome(record)))


def _store(project: str | None, redis_url: str | None, command: str) -> Store:
    config: Config = load_cli_config(project, redis_url=redis_url)
    return Store(config, existing_redis_url(config, command))


@reports_errors
def logs(job_id: str = JOB_ID_ARGUMENT,
         follow: bool = typer.Option(False, "--follow", "-f",
                                     help="Keep printing new lines until the job settles, "
                                          "then its outcome."),
         redis_url: str = REDIS_URL_OPTION,
         project: str = PROJECT_OPTION) -> None:
    """Print a job's log lines (--follow: until it settles)."""
    store = _store(project, redis_url, "logs")
    try:
        job_id = resolve_job_id(store, job_id)
        after = _print_new_lines(store, job_id, "-")
        record = _record(store, job_id)
        if record["status"] == "" and after == "-":
            raise _not_found(store, job_id)
        if follow:
            _follow(store, job_id, after, record)
        elif record["status"] in TERMINAL_STATUSES:
            typer.echo(_job_line(job_id, record, _outcome(record)))
        elif record["status"]:
            typer.echo(_job_line(job_id, record, _state(store, job_id, record)))
    finally:
        store.close()


@reports_errors
def result(job_id: str = JOB_ID_ARGUMENT,
           wait_timeout: int = typer.Option(None, "--wait-timeout", metavar="MS",
                                            help="Stop waiting after MS ms (exit 5). "
                                                 "Default: wait until the job settles."),
           redis_url: str = REDIS_URL_OPTION,
           project: str = PROJECT_OPTION) -> None:
    """Wait for a job enqueued earlier and print its result as JSON.

    For a job that `run --wait-timeout` stopped waiting for, or one enqueue() or cron
    started. If the job failed its error goes to stderr and the exit code is 1."""
    from .client import Client
    from .registry import Registry

    config = load_cli_config(project, redis_url=redis_url)
    client = Client(config, Registry({}), existing_redis_url(config, "result"))
    try:
        value = client.get_result(resolve_job_id(client.store, job_id), wait_timeout)
    finally:
        client.close()
    typer.echo(json.dumps(value))
