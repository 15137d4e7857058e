"""The job-control commands: `job`, `cancel` (and `retry`, `list`). Each reads
or changes jobs through the client's job control (job_control.py), never starts the
embedded server, takes a full job id or the start of one (cli_results.resolve_job_id), and
maps our errors to exit codes (cli_support.reports_errors): an unknown or malformed id is
one line and exit 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from .cli_results import JOB_ID_ARGUMENT, resolve_job_id
from .cli_support import (
    PROJECT_OPTION,
    REDIS_URL_OPTION,
    existing_redis_url,
    load_cli_config,
    reports_errors,
)
from .ctl_text import cancel_line, job_lines

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
    """Show one job: status, progress, attempts and errors, times, where it runs."""
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
    """Cancel a job: one not yet running never runs; a running one is stopped within a
    heartbeat (its child killed, or ctx.cancelled set in thread mode); a settled one is
    left alone. Its waiting callers get JobCancelled (`run` and `result` exit 1)."""
    with _client(project, redis_url, "cancel") as client:
        job_id = resolve_job_id(client.store, job_id)
        done = client.cancel(job_id)
        where = client.get_job(job_id).supervisor if done.outcome == "cancelling" else None
    typer.echo(cancel_line(done, where))
