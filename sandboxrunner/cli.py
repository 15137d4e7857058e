"""The `sandboxrunner` command: start, run, jobs, logs, result, pause, resume, cron, top,
redis, and job control (cli_ctl.py: job, cancel, retry, delete, list). No logic lives here: each
command builds the config, calls the library and maps errors to exit codes. `logs` and
`result` live in cli_results.py, `pause` and `resume` in cli_queues.py; the shared
options, the error reporting
and finding Redis without starting it in cli_support.py."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import typer

from . import errors
from .cli_ctl import cancel, delete, job, list_, retry
from .cli_dashboard import dashboard
from .cli_queues import parse_run_at, pause, resume
from .cli_results import logs, result
from .cli_support import (
    EXIT_CODES_HELP,
    PROJECT_OPTION,
    REDIS_URL_OPTION,
    existing_redis_url,
    load_cli_config,
    reports_errors,
    talking_to,
)
from .cli_support import fail as _fail
from .config import Config

log = logging.getLogger(__name__)

REDIS_WAIT_FIRST_S = 0.5
REDIS_WAIT_MAX_S = 5.0

# Plain help (no rich boxes): greppable, and flags show no `<bool>`; a bug's traceback
# stays plain text too.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False, epilog=EXIT_CODES_HELP,
                  help="Background jobs on Redis: job files, run_job, cron, sandboxes.")


def _config(project: str | None = None, **overrides: Any) -> Config:
    return load_cli_config(project, **overrides)


def _registry(config: Config) -> Any:
    from .registry import load_project_registry

    try:
        return load_project_registry(config)
    except (errors.JobLoadError, errors.ConfigError) as exc:
        raise _fail(exc, errors.EXIT_CONFIG) from exc


def _redis_url(config: Config, wait: bool = False) -> str:
    """The Redis URL, checked to answer. WAIT: retry with backoff until it does, logging
    one line per try (a service may start before its Redis), instead of exiting 4."""
    from .connection import check_reachable, resolve_redis_url

    try:
        url = talking_to(resolve_redis_url(config), config)
    except errors.RedisUnavailable as exc:
        raise _fail(exc, errors.EXIT_REDIS) from exc
    delay_s = REDIS_WAIT_FIRST_S
    while True:
        try:
            check_reachable(url)
            return url
        except errors.RedisUnavailable as exc:
            if not wait:
                raise _fail(exc, errors.EXIT_REDIS) from exc
            log.warning("%s; retrying in %g s (--no-wait-for-redis exits instead)", exc,
                        delay_s)
        try:
            time.sleep(delay_s)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        delay_s = min(delay_s * 2, REDIS_WAIT_MAX_S)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
@reports_errors
def start(
    workers: str = typer.Option(None, "--workers", metavar="QUEUES",
                                help="Queues to serve, comma-separated: default, priority "
                                     "or both (the default)."),
    concurrency: int = typer.Option(None, "--concurrency", "-c", metavar="N",
                                    help="Jobs at once per queue. Default: 300 threads, or "
                                         "one child per CPU with --separate-process."),
    jobs_dir: str = typer.Option(None, "--jobs-dir", metavar="DIR",
                                 help="Folder of job files. Default: worker_jobs/ in the "
                                      "project."),
    redis_url: str = REDIS_URL_OPTION,
    separate_process: bool = typer.Option(None, "--separate-process/--threads",
                                          help="Run each job in a pre-forked child process, "
                                               "hard-killed at its timeout (default: "
                                               "threads)."),
    production: bool = typer.Option(None, "--production",
                                    help="Run as production (as SANDBOXRUNNER_ENV=production)."),
    wait_for_redis: bool = typer.Option(True, "--wait-for-redis/--no-wait-for-redis",
                                        help="Retry until Redis answers (the default), or "
                                             "exit 4 at once."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug lines too."),
    project: str = PROJECT_OPTION,
) -> None:
    """Serve the queues until SIGINT/SIGTERM.

    A supervisor runs the jobs of its queues until it is stopped; then it lets running jobs
    finish for grace_period ms, hands back any still running, and exits 0."""
    _setup_logging(verbose)
    config = _config(project, workers=workers, concurrency=concurrency, jobs_dir=jobs_dir,
                     redis_url=redis_url, use_separate_process=separate_process,
                     production=production)
    from .proctitle import set_title, supervisor_title

    set_title(supervisor_title(config))  # before any thread starts (proctitle.py)
    registry = _registry(config)
    url = _redis_url(config, wait=wait_for_redis)
    from .process_client import ClientFactory
    from .signals import serve_until_signal
    from .supervisor import Supervisor

    supervisor = Supervisor(config, registry, url,
                            make_client=ClientFactory(config, registry, url))
    typer.echo(f"sandboxrunner supervisor {supervisor.sid}: queues "
               f"{', '.join(config.workers)}, {supervisor.mode} mode, "
               f"{len(registry.names())} job(s), Redis {config.redacted_redis_url() or url}")
    raise typer.Exit(serve_until_signal(supervisor))


@app.command()
@reports_errors
def run(
    name: str = typer.Argument(..., metavar="NAME",
                               help="The job: a file in worker_jobs/ or a plugin job "
                                    "(`sandboxrunner jobs` lists them)."),
    data: str = typer.Argument(None, metavar="JSON",
                               help="The job's data as JSON, e.g. '{\"user_id\": \"u1\"}'. "
                                    "Default: null."),
    timeout: int = typer.Option(None, "--timeout", metavar="MS",
                                help="Run-time limit in ms, counted from the job's start. "
                                     "Default: the job's `timeout`, else job_timeout."),
    wait_timeout: int = typer.Option(None, "--wait-timeout", metavar="MS",
                                     help="Stop waiting after MS ms (exit 5); the job goes "
                                          "on, and `sandboxrunner result ID` fetches it."),
    delay: int = typer.Option(None, "--delay", metavar="MS",
                              help="Run it no sooner than MS ms from now."),
    run_at: str = typer.Option(None, "--run-at", metavar="TIME",
                               help="Run it at TIME, ISO 8601 with a timezone, e.g. "
                                    "2030-01-01T09:00:00+01:00."),
    job_id: str = typer.Option(None, "--job-id", metavar="KEY",
                               help="An idempotency key: the job's id is QUEUE-KEY, and the "
                                    "same key again gives that job's result."),
    redis_url: str = REDIS_URL_OPTION,
    project: str = PROJECT_OPTION,
) -> None:
    """Run a job, wait, and print its result as JSON.

    If the job fails its error goes to stderr, with its traceback, and the exit code is 1."""
    config = _config(project, redis_url=redis_url)
    try:
        payload = json.loads(data) if data is not None else None
    except ValueError as exc:
        raise errors.InvalidJobData(f"data is not valid JSON: {exc}: {data!r}") from exc
    from .client import Client
    from .process_client import set_default_client

    client = Client(config, _registry(config), _redis_url(config))
    set_default_client(client)
    try:
        value = client.run_job(name, payload, timeout=timeout, wait_timeout=wait_timeout,
                               delay=delay, run_at=parse_run_at(run_at), job_id=job_id)
    finally:
        client.close()
    typer.echo(json.dumps(value))


@app.command()
def jobs(jobs_dir: str = typer.Option(None, "--jobs-dir", metavar="DIR",
                                      help="Folder of job files. Default: worker_jobs/ in "
                                           "the project."),
         project: str = PROJECT_OPTION) -> None:
    """List the jobs found in the jobs folder and plugins."""
    config = _config(project, jobs_dir=jobs_dir)
    from .listings import jobs_lines

    for line in jobs_lines(_registry(config), config):
        typer.echo(line)


app.command()(logs)
app.command()(result)
app.command()(job)
app.command()(cancel)
app.command()(retry)
app.command()(delete)
app.command("list")(list_)
app.command()(pause)
app.command()(resume)
app.command()(dashboard)


redis_app = typer.Typer(help="The embedded Redis server of this project.")
app.add_typer(redis_app, name="redis")


@redis_app.command("status")
def redis_status(project: str = PROJECT_OPTION) -> None:
    """Show the embedded server of this project, if one runs."""
    from .embedded import embedded_status

    status = embedded_status(_config(project).project_dir)
    typer.echo(json.dumps(status) if status else "no embedded server runs for this project")


@redis_app.command("stop")
@reports_errors
def redis_stop(force: bool = typer.Option(False, "--force",
                                          help="Stop it even while live supervisors use it."),
               project: str = PROJECT_OPTION) -> None:
    """Stop the embedded server of this project; refused (exit 7) while live supervisors
    use it, unless --force."""
    from functools import partial

    from .embedded import stop_embedded
    from .store import live_supervisors_at

    config = _config(project)
    try:
        stopped = stop_embedded(config.project_dir,
                                None if force else partial(live_supervisors_at, config))
    except errors.ServerInUse as exc:
        raise _fail(exc, errors.EXIT_IN_USE) from exc
    typer.echo("stopped" if stopped else "no embedded server was running")


@app.command()
@reports_errors
def cron(remove: str = typer.Option(None, "--remove", metavar="JOB",
                                    help="Delete JOB's schedule (a job gone for good)."),
         run_name: str = typer.Option(None, "--run", metavar="JOB",
                                     help="Run cron job JOB now, as its next tick would; "
                                          "its schedule goes on as before."),
         redis_url: str = REDIS_URL_OPTION, project: str = PROJECT_OPTION) -> None:
    """List the cron schedules in Redis: in words, next fire times, last run and outcome.

    --run JOB queues a cron job now (its data, queue and singleton rule as a tick's; shown
    as run by hand), --remove JOB deletes a schedule."""
    if remove and run_name:
        raise errors.InvalidJobData("cron takes --run JOB or --remove JOB, not both")
    config = _config(project, redis_url=redis_url)
    from .cron import remove_schedule
    from .cron_now import run_now
    from .cron_state import list_schedules
    from .listings import cron_lines, ran_now_lines, removed_lines
    from .store import Store

    store = Store(config, existing_redis_url(config, "cron"))
    try:
        if run_name:
            lines = ran_now_lines(run_name,
                                  run_now(store, _registry(config), config, run_name))
        else:
            lines = (removed_lines(remove, remove_schedule(store, remove)) if remove
                     else cron_lines(list_schedules(store)))
    except errors.CronScheduleNotFound as exc:
        raise _fail(exc, errors.EXIT_USAGE) from exc
    finally:
        store.close()
    for line in lines:
        typer.echo(line)


@app.command()
@reports_errors
def top(
    once: bool = typer.Option(False, "--once", help="Print one snapshot as text and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print one snapshot as JSON and exit."),
    width: int = typer.Option(None, "--width", min=40, metavar="N",
                              help="Render at N columns. Default: the terminal's width."),
    refresh: float = typer.Option(1.0, "--refresh", min=0.1, metavar="SECONDS",
                                  help="Seconds between refreshes of the live screen."),
    redis_url: str = REDIS_URL_OPTION,
    project: str = PROJECT_OPTION,
) -> None:
    """Live dashboard: queues, supervisors, jobs, failures, cron, logs.

    q or Ctrl-C quits. Read-only: it never starts the embedded server."""
    config = _config(project, redis_url=redis_url)
    from .top import run_top

    run_top(config, once=once, as_json=as_json, width=width, refresh_s=refresh)


for _command in app.registered_commands:  # every command's --help lists the exit codes
    _command.epilog = _command.epilog or EXIT_CODES_HELP


def main() -> None:  # pragma: no cover - console entry for python -m
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
