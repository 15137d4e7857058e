"""The job-control commands: `job`, `cancel`, `retry`, `delete`, `list`. Each reads
or changes jobs through the client's job control (job_control.py), never starts the
embedded server, takes a full job id or the start of one (job_lookup.resolve_job_id), and
maps our errors to exit codes (cli_support.reports_errors): an unknown or malformed id is
one line and exit 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from . import errors
from .cli_results import JOB_ID_ARGUMENT
from .cli_support import (
    PROJECT_OPTION,
    REDIS_URL_OPTION,
    existing_redis_url,
    load_cli_config,
    reports_errors,
)
from .ctl_text import cancel_line, job_lines, list_lines, retry_failed_lines
from .job_lookup import resolve_job_id

if TYPE_CHECKING:
    from .client import Client


@contextmanager
def _client(project: str | None, redis_url: str | None, command: str) -> Iterator[Client]:
    """A client of the configured Redis (or the running embedded server), no job files
    needed: these commands name jobs by id."""
    from .client import Client
    from .registry import Registry

    config = load_cli_config(project, redis_url=redis_url)
    client = Client(config, Registry({}), existing_redis_url(config, command))
    try:
        yield client
    finally:
        client.close()


@reports_errors
def job(job_id: str = JOB_ID_ARGUMENT,
        as_json: bool = typer.Option(False, "--json", help="Print it as JSON."),
        redis_url: str = REDIS_URL_OPTION, project: str = PROJECT_OPTION) -> None:
    """Show one job: status, progress, attempts, errors, where.

    Also its times and its result once completed; --json prints get_job's JobInfo."""
    with _client(project, redis_url, "job") as client:
        info = client.get_job(resolve_job_id(client.store, job_id))
    if as_json:
        typer.echo(json.dumps(info.as_dict()))
        return
    for line in job_lines(info):
        typer.echo(line)


@reports_errors
def cancel(job_id: str = JOB_ID_ARGUMENT,
           redis_url: str = REDIS_URL_OPTION, project: str = PROJECT_OPTION) -> None:
    """Cancel a job: if queued it never runs, if running it stops.

    A running job is stopped within a heartbeat (its child killed, or ctx.cancelled set in
    thread mode); a settled one is left alone. Its waiting callers get JobCancelled (`run`
    and `result` exit 1)."""
    with _client(project, redis_url, "cancel") as client:
        job_id = resolve_job_id(client.store, job_id)
        done = client.cancel(job_id)
        where = client.get_job(job_id).supervisor if done.outcome == "cancelling" else None
    typer.echo(cancel_line(done, where))


@reports_errors
def delete(job_id: str = JOB_ID_ARGUMENT,
           redis_url: str = REDIS_URL_OPTION, project: str = PROJECT_OPTION) -> None:
    """Delete a job: its record, log lines and index entries.

    A queued, delayed or throttled job leaves its queue and never runs (its waiting callers
    get JobDeleted); a running one is refused (exit 2): cancel it first."""
    with _client(project, redis_url, "delete") as client:
        done = client.delete_job(resolve_job_id(client.store, job_id))
    typer.echo(done.message)


@reports_errors
def retry(job_id: str = typer.Argument(None, metavar="ID",
                                       help="The failed or cancelled job to run again (its "
                                            "id or its start)."),
          failed: bool = typer.Option(False, "--failed",
                                      help="Run every failed job again (of --queue, named "
                                           "--name)."),
          queue: str = typer.Option(None, "--queue", metavar="Q",
                                    help="With --failed: only this queue's jobs."),
          name: str = typer.Option(None, "--name", metavar="NAME",
                                   help="With --failed: only jobs of this name."),
          redis_url: str = REDIS_URL_OPTION, project: str = PROJECT_OPTION) -> None:
    """Run a failed or cancelled job again, same id (or --failed).

    The job keeps its id, attempts and errors; with --failed, every failed job of a queue
    and name runs again."""
    if (job_id is None) == (not failed) or (not failed and (queue or name)):
        raise errors.InvalidJobData("retry takes a job ID or --failed (with --queue and "
                                    "--name), not both and not neither")
    with _client(project, redis_url, "retry") as client:
        if job_id is not None:
            job_id = resolve_job_id(client.store, job_id)
            client.retry(job_id)
            typer.echo(f"retried {job_id} ({client.get_job(job_id).name}): it runs again, "
                       "same id")
            return
        for line in retry_failed_lines(client, queue, name):
            typer.echo(line)


@reports_errors
def list_(queue: str = typer.Option(None, "--queue", metavar="Q",
                                    help="Only this queue's jobs. Default: both."),
          status: str = typer.Option(None, "--status", metavar="STATUS",
                                     help="queued, delayed, active, completed, failed or "
                                          "cancelled. Default: all."),
          name: str = typer.Option(None, "--name", metavar="NAME",
                                   help="Only jobs of this name."),
          limit: int = typer.Option(50, "--limit", metavar="N",
                                    help="Jobs per page, 1 to 1000."),
          cursor: str = typer.Option(None, "--cursor", metavar="CURSOR",
                                     help="Where the previous page stopped (it prints it)."),
          as_json: bool = typer.Option(False, "--json", help="Print the page as JSON."),
          redis_url: str = REDIS_URL_OPTION, project: str = PROJECT_OPTION) -> None:
    """List jobs by queue, status and name, a page at a time.

    Statuses: queued, delayed, active, completed, failed, cancelled. When there is more,
    the last line is the command for the next page."""
    with _client(project, redis_url, "list") as client:
        page = client.list_jobs(queue, status, name, limit, cursor)
    if as_json:
        typer.echo(json.dumps({"items": [i.as_dict() for i in page.items],
                               "cursor": page.cursor}))
        return
    args = {"--queue": queue, "--status": status, "--name": name,
            "--limit": None if limit == 50 else str(limit)}
    for line in list_lines(page, " ".join(f"{k} {v}" for k, v in args.items() if v)):
        typer.echo(line)
