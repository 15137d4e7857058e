"""`sandboxrunner pause QUEUE` and `sandboxrunner resume QUEUE`: set or clear a queue's
paused flag in Redis (queue_control.py says what a pause does). With no REDIS_URL the
project's embedded server is started if needed, as for `run`: the flag lives there.
Also `run --run-at`'s parsing."""

from __future__ import annotations

import datetime as dt

import typer

from . import errors
from .cli_support import PROJECT_OPTION, REDIS_URL_OPTION, load_cli_config, reports_errors
from .cli_support import talking_to as _talking_to

QUEUE_ARGUMENT = typer.Argument(..., metavar="QUEUE", help="The queue: default or priority.")


def parse_run_at(text: str | None) -> dt.datetime | None:
    """`run --run-at TIME` as a datetime (its timezone is checked with the call)."""
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise errors.InvalidJobData(f"run_at must be an ISO 8601 time with a timezone, like "
                                    f"2030-01-01T09:00:00+01:00; got {text!r}") from exc


def _set_paused(queue: str, paused: bool, redis_url: str | None, project: str | None
                ) -> bool:
    from .connection import resolve_redis_url
    from .queue_control import check_queue
    from .store import Store, check_reachable

    check_queue(queue)
    config = load_cli_config(project, redis_url=redis_url)
    url = _talking_to(resolve_redis_url(config), config)
    check_reachable(url)
    store = Store(config, url)
    try:
        return store.set_paused(queue, paused)
    finally:
        store.close()


@reports_errors
def pause(queue: str = QUEUE_ARGUMENT, redis_url: str = REDIS_URL_OPTION,
          project: str = PROJECT_OPTION) -> None:
    """Stop every supervisor claiming QUEUE's jobs until `resume` (running jobs finish,
    enqueues are still accepted); it stays paused across restarts."""
    if _set_paused(queue, True, redis_url, project):
        typer.echo(f"paused queue {queue}: no supervisor claims its jobs until "
                   f"`sandboxrunner resume {queue}`")
    else:
        typer.echo(f"queue {queue} was already paused")


@reports_errors
def resume(queue: str = QUEUE_ARGUMENT, redis_url: str = REDIS_URL_OPTION,
           project: str = PROJECT_OPTION) -> None:
    """Let supervisors claim QUEUE's jobs again."""
    if _set_paused(queue, False, redis_url, project):
        typer.echo(f"resumed queue {queue}")
    else:
        typer.echo(f"queue {queue} was not paused")
