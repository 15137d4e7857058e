"""What every `sandboxrunner` command shares: the options that name the project and the
Redis server, loading the config, finding Redis without starting it, and reporting an
error as one line with its exit code (`errors.EXIT_*`). The commands live in cli.py (the
`app`) and cli_results.py (one job's result and log lines)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import typer

from . import errors
from .config import Config, load_config, project_hint
from .redis_errors import REDIS_ERRORS, translate

PROJECT_OPTION: Any = typer.Option(
    None, "--project", metavar="DIR",
    help="The project folder: holds worker_jobs/ or a pyproject.toml with "
         "[tool.sandboxrunner]. Default: SANDBOXRUNNER_PROJECT, else the nearest such "
         "folder from the current one upwards.")
REDIS_URL_OPTION: Any = typer.Option(
    None, "--redis-url", metavar="URL",
    help="redis://, rediss:// or unix:// URL of the Redis server (redis+cluster://H:P,H:P/ "
         "for a cluster, redis+sentinel://H:P,H:P/SERVICE for Sentinels). Default: "
         "REDIS_URL, else [tool.sandboxrunner] redis_url, else the project's embedded server.")

EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT

# How the user wrote each setting on the command line, so an error quotes the flag.
FLAG_NAMES = {"workers": "--workers", "concurrency": "--concurrency",
              "jobs_dir": "--jobs-dir", "redis_url": "--redis-url",
              "use_separate_process": "--separate-process/--threads",
              "production": "--production", "project_dir": "--project"}

EXIT_CODES_HELP = f"""\b
Exit codes:
  {errors.EXIT_OK}  done
  {errors.EXIT_JOB_FAILED}  the job failed, timed out or was cancelled
  {errors.EXIT_USAGE}  bad input: unknown job or job id, data not JSON, a bad option
  {errors.EXIT_CONFIG}  bad configuration or job file, or no project found
  {errors.EXIT_REDIS}  Redis unreachable, or no embedded server runs (read-only commands)
  {errors.EXIT_WAIT_TIMEOUT}  --wait-timeout passed; the job goes on (`sandboxrunner result ID`)
  {errors.EXIT_NO_SUPERVISOR}  no supervisor serves the job's queue; the job stays queued
  {errors.EXIT_IN_USE}  `redis stop` refused: live supervisors use the server (--force)"""

_EXIT_CODES: tuple[tuple[type[errors.SandboxRunnerError], int], ...] = (
    (errors.JobError, errors.EXIT_JOB_FAILED),
    (errors.UnknownJob, errors.EXIT_USAGE),
    (errors.UnknownQueue, errors.EXIT_USAGE),
    (errors.InvalidJobData, errors.EXIT_USAGE),
    (errors.JobNotFound, errors.EXIT_USAGE),
    (errors.InvalidJobState, errors.EXIT_USAGE),
    (errors.ConfigError, errors.EXIT_CONFIG),
    (errors.JobLoadError, errors.EXIT_CONFIG),
    (errors.RedisUnavailable, errors.EXIT_REDIS),
    (errors.RedisRefused, errors.EXIT_REDIS),
    (errors.WaitTimeout, errors.EXIT_WAIT_TIMEOUT),
    (errors.ServerInUse, errors.EXIT_IN_USE),
    (errors.NoSupervisor, errors.EXIT_NO_SUPERVISOR),
)

Command = TypeVar("Command", bound=Callable[..., Any])

# What each command was doing when Redis failed, for its error line
DOING = {"start": "start a supervisor", "run": "run the job", "result": "fetch the result",
         "logs": "read the job's log", "cron": "read the cron schedules",
         "top": "read the dashboard", "redis_stop": "ask which supervisors use it",
         "job": "read the job", "cancel": "cancel the job", "retry": "retry jobs",
         "list_": "list the jobs"}
# The Redis the command talks to (URL, key prefix), once known: named in its error line
_REDIS: ContextVar[tuple[str, str]] = ContextVar("redis", default=("", "sr"))


def talking_to(url: str, config: Config) -> str:
    """Note URL (CONFIG's Redis) as the one this command talks to; returns URL."""
    _REDIS.set((url, config.key_prefix))
    return url


def fail(exc: BaseException | str, code: int) -> typer.Exit:
    # plain text, never wrapped: paths and tracebacks must stay greppable
    typer.secho("error: ", fg=typer.colors.RED, bold=True, err=True, nl=False)
    typer.echo(str(exc), err=True)
    return typer.Exit(code)


def exit_code_of(exc: errors.SandboxRunnerError) -> int:
    return next((code for kind, code in _EXIT_CODES if isinstance(exc, kind)),
                errors.EXIT_JOB_FAILED)


def reports_errors(command: Command) -> Command:
    """Wrap a command so our errors and Redis failures end it with one line and their exit
    code, never a traceback (Ctrl-C ends it quietly); a failed job's remote traceback is
    printed above its line. A redis-py error becomes ours (redis_errors.translate), naming
    the Redis noted by `talking_to`."""

    @functools.wraps(command)
    def reporting(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except errors.JobError as exc:
            if exc.remote_traceback:
                typer.echo(exc.remote_traceback.rstrip("\n"), err=True)
            raise fail(exc, errors.EXIT_JOB_FAILED) from exc
        except errors.WaitTimeout as exc:
            raise fail(f"{exc}: `sandboxrunner result {exc.job_id}`",
                       errors.EXIT_WAIT_TIMEOUT) from exc
        except errors.SandboxRunnerError as exc:
            raise fail(exc, exit_code_of(exc)) from exc
        except REDIS_ERRORS as exc:  # ours, one line: redis_errors.py
            url, prefix = _REDIS.get()
            doing = DOING.get(command.__name__, f"run `sandboxrunner {command.__name__}`")
            ours = translate(exc, url, doing, prefix)
            raise fail(ours, exit_code_of(ours)) from exc
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return reporting  # type: ignore[return-value]


def load_cli_config(project: str | None = None, **overrides: Any) -> Config:
    try:
        return load_config(overrides, project_dir=Path(project) if project else None,
                           names=FLAG_NAMES)
    except errors.ConfigError as exc:
        raise fail(exc, errors.EXIT_CONFIG) from exc


def existing_redis_url(config: Config, command: str) -> str:
    """The Redis a read-only COMMAND reads, checked to answer: the configured one, else the
    project's running embedded server. It never starts one: none running, nothing to read."""
    from .store import check_reachable

    url = talking_to(config.redis_url or _embedded_url(config, command), config)
    check_reachable(url)
    return url


def _embedded_url(config: Config, command: str) -> str:
    from .embedded import embedded_status

    unset = "no Redis URL is configured (REDIS_URL, --redis-url or [tool.sandboxrunner] redis_url)"
    if not config.project_found:
        raise errors.RedisUnavailable(f"{unset} and {project_hint(config)}")
    status = embedded_status(config.project_dir)
    if status is None:
        raise errors.RedisUnavailable(
            f"{unset} and no embedded server runs for {config.project_dir}; "
            f"`sandboxrunner {command}` only reads, so it starts none: start a supervisor "
            f"there (`sandboxrunner start`) or set REDIS_URL")
    return str(status["url"])
