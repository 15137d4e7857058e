"""`sandboxrunner logs` and `sandboxrunner result`: one job's log lines and outcome, read
from Redis. Both only read: they never start the embedded server."""

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
from .keys import queue_of_job

JOB_ID_ARGUMENT = typer.Argument(
    ..., metavar="ID",
    help="The job's id, as `run`, enqueue() or `top --json` give it.")


def _checked_id(job_id: str) -> str:
    try:
        queue_of_job(job_id)
    except ValueError as exc:
        raise errors.JobNotFound(f"{exc}; pass the id as `top --json` shows it") from exc
    return job_id


@reports_errors
def logs(job_id: str = JOB_ID_ARGUMENT,
         follow: bool = typer.Option(False, "--follow", "-f",
                                     help="Keep printing new lines until the job settles."),
         redis_url: str = REDIS_URL_OPTION,
         project: str = PROJECT_OPTION) -> None:
    """Print a job's log lines (--follow: until it settles)."""
    from .joblog import read_job_log
    from .store import Store

    config = load_cli_config(project, redis_url=redis_url)
    store = Store(config, existing_redis_url(config, "logs"))
    job_id = _checked_id(job_id)
    after = "-"
    while True:
        for entry_id, line in read_job_log(store.redis, store.keys, job_id, after):
            after = entry_id
            stamp = time.strftime("%H:%M:%S", time.localtime(line.get("ts", 0)))
            extra = f" {json.dumps(line['data'])}" if "data" in line else ""
            typer.echo(f"{stamp} {line.get('level', 'info'):5} {line.get('msg', '')}{extra}")
            if "err" in line:
                typer.echo(line["err"].get("traceback", ""))
        if not follow:
            return
        status = store.job_fields(job_id, "status")[0]
        if status in ("completed", "failed", ""):
            return
        time.sleep(0.5)


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
        value = client.get_result(_checked_id(job_id), wait_timeout)
    finally:
        client.close()
    typer.echo(json.dumps(value))
