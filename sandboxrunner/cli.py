"""The `sandboxrunner` command: start, run, jobs, logs, redis. No logic lives here:
each command builds the config, calls the library and maps errors to exit codes."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import typer

from . import errors
from .config import Config, load_config

log = logging.getLogger(__name__)

REDIS_WAIT_FIRST_S = 0.5
REDIS_WAIT_MAX_S = 5.0

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Background jobs on Redis: job files, run_job, cron, sandboxes.")


def _fail(exc: BaseException, code: int) -> typer.Exit:
    # plain text, never wrapped: paths and tracebacks must stay greppable
    typer.secho("error: ", fg=typer.colors.RED, bold=True, err=True, nl=False)
    typer.echo(str(exc), err=True)
    return typer.Exit(code)


def _config(**overrides: Any) -> Config:
    try:
        return load_config(overrides)
    except errors.ConfigError as exc:
        raise _fail(exc, errors.EXIT_CONFIG) from exc


def _registry(config: Config) -> Any:
    from .registry import load_registry

    try:
        return load_registry(config.jobs_dir)
    except errors.JobLoadError as exc:
        raise _fail(exc, errors.EXIT_CONFIG) from exc


def _redis_url(config: Config, wait: bool = False) -> str:
    """The Redis URL, checked to answer. WAIT: retry with backoff until it does, logging
    one line per try (a service may start before its Redis), instead of exiting 4."""
    from .client import resolve_redis_url
    from .store import check_reachable

    try:
        url = resolve_redis_url(config)
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
def start(
    workers: str = typer.Option(None, "--workers", help="Queues to serve: default,priority"),
    concurrency: int = typer.Option(None, "--concurrency", "-c", help="Jobs at once per queue"),
    jobs_dir: str = typer.Option(None, "--jobs-dir", help="Folder of job files"),
    redis_url: str = typer.Option(None, "--redis-url", help="redis://, rediss:// or unix://"),
    separate_process: bool = typer.Option(None, "--separate-process/--threads",
                                          help="Run jobs in pre-forked child processes"),
    production: bool = typer.Option(None, "--production", help="Run as production"),
    wait_for_redis: bool = typer.Option(True, "--wait-for-redis/--no-wait-for-redis",
                                        help="Retry until Redis answers, or exit 4 at once"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Start a supervisor that serves the queues until SIGINT/SIGTERM."""
    _setup_logging(verbose)
    config = _config(workers=workers, concurrency=concurrency, jobs_dir=jobs_dir,
                     redis_url=redis_url, use_separate_process=separate_process,
                     production=production)
    registry = _registry(config)
    url = _redis_url(config, wait=wait_for_redis)
    from .supervisor import Supervisor

    supervisor = Supervisor(config, registry, url)
    typer.echo(f"sandboxrunner supervisor {supervisor.sid}: queues "
               f"{', '.join(config.workers)}, {supervisor.mode} mode, "
               f"{len(registry.names())} job(s), Redis {config.redacted_redis_url() or url}")
    raise typer.Exit(supervisor.run_until_signal())


@app.command()
def run(
    name: str = typer.Argument(..., help="Job name"),
    data: str = typer.Argument(None, help="Job data as JSON"),
    timeout: int = typer.Option(None, "--timeout", help="Run-time limit in ms"),
    wait_timeout: int = typer.Option(None, "--wait-timeout", help="Give up waiting after ms"),
) -> None:
    """Run a job, wait, and print its result as JSON (exit 1 if it failed)."""
    config = _config()
    try:
        payload = json.loads(data) if data is not None else None
    except ValueError as exc:
        raise _fail(errors.InvalidJobData(f"data is not valid JSON: {exc}: {data!r}"),
                    errors.EXIT_USAGE) from exc
    from .client import Client, set_default_client

    client = Client(config, _registry(config), _redis_url(config))
    set_default_client(client)
    try:
        result = client.run_job(name, payload, timeout=timeout, wait_timeout=wait_timeout)
    except errors.JobError as exc:
        if exc.remote_traceback:
            typer.echo(exc.remote_traceback, err=True)
        raise _fail(exc, errors.EXIT_JOB_FAILED) from exc
    except errors.SandboxRunnerError as exc:
        bad_input = isinstance(exc, errors.UnknownJob | errors.InvalidJobData)
        raise _fail(exc, errors.EXIT_USAGE if bad_input else errors.EXIT_JOB_FAILED) from exc
    finally:
        client.close()
    typer.echo(json.dumps(result))


@app.command()
def jobs(jobs_dir: str = typer.Option(None, "--jobs-dir")) -> None:
    """List the jobs found in the jobs folder and plugins."""
    config = _config(jobs_dir=jobs_dir)
    registry = _registry(config)
    from .registry import describe

    if not registry.names():
        typer.echo(f"no jobs found in {config.jobs_dir}")
        return
    rows = [("name", "queue", "cron", "singleton", "timeout_ms", "source")]
    for name in registry.names():
        d = describe(registry.get(name))
        rows.append((d["name"], d["queue"], d["cron"] or "-", d["singleton"] or "-",
                     str(d["timeout_ms"] or config.job_timeout), _short_path(d["source"])))
    _print_columns(rows)


def _print_columns(rows: Sequence[Sequence[str]]) -> None:
    """Plain aligned columns: greppable, never truncated or wrapped."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _short_path(source: str) -> str:
    try:
        return os.path.relpath(source) if os.path.isabs(source) else source
    except ValueError:
        return source


@app.command()
def logs(job_id: str = typer.Argument(...),
         follow: bool = typer.Option(False, "--follow", "-f")) -> None:
    """Print a job's log lines; --follow keeps printing until the job settles."""
    config = _config()
    from .joblog import read_job_log
    from .store import Store

    store = Store(config, _redis_url(config))
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


redis_app = typer.Typer(help="The embedded Redis server of this project.")
app.add_typer(redis_app, name="redis")


@redis_app.command("status")
def redis_status() -> None:
    """Show the embedded server of this project, if one runs."""
    from .embedded import embedded_status

    status = embedded_status(_config().project_dir)
    typer.echo(json.dumps(status) if status else "no embedded server runs for this project")


@redis_app.command("stop")
def redis_stop() -> None:
    """Stop the embedded server of this project."""
    from .embedded import stop_embedded

    stopped = stop_embedded(_config().project_dir)
    typer.echo("stopped" if stopped else "no embedded server was running")


@app.command()
def cron() -> None:
    """List the cron schedules in Redis: pattern, next run, last run and its outcome."""
    config = _config()
    from .cron import SCHEDULE_COLUMNS, describe_schedule, list_schedules
    from .store import Store

    store = Store(config, _redis_url(config))
    try:
        rows = [describe_schedule(row) for row in list_schedules(store)]
    finally:
        store.close()
    if not rows:
        typer.echo("no cron schedules in Redis (a supervisor syncs them when it starts)")
        return
    _print_columns([SCHEDULE_COLUMNS, *rows])


@app.command()
def top(
    once: bool = typer.Option(False, "--once", help="Print one snapshot and exit"),
    as_json: bool = typer.Option(False, "--json", help="Print one snapshot as JSON and exit"),
    width: int = typer.Option(None, "--width", min=40, help="Render at N columns"),
    refresh: float = typer.Option(1.0, "--refresh", min=0.1, help="Seconds between refreshes"),
    redis_url: str = typer.Option(None, "--redis-url", help="redis://, rediss:// or unix://"),
) -> None:
    """Dashboard of queues, supervisors, running jobs, failures, cron and logs (q quits).
    Read-only; never starts the embedded server."""
    config = _config(redis_url=redis_url)
    from .top import run_top

    try:
        run_top(config, once=once, as_json=as_json, width=width, refresh_s=refresh)
    except errors.RedisUnavailable as exc:
        raise _fail(exc, errors.EXIT_REDIS) from exc


def main() -> None:  # pragma: no cover - console entry for python -m
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
