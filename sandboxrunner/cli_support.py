"""What every `sandboxrunner` command shares: loading the config and reporting an error
as one line with its exit code. The commands live in cli.py (the `app`) and
cli_results.py (one job's result and log lines)."""

from __future__ import annotations

from typing import Any

import typer

from . import errors
from .config import Config, load_config


def fail(exc: BaseException, code: int) -> typer.Exit:
    # plain text, never wrapped: paths and tracebacks must stay greppable
    typer.secho("error: ", fg=typer.colors.RED, bold=True, err=True, nl=False)
    typer.echo(str(exc), err=True)
    return typer.Exit(code)


def load_cli_config(**overrides: Any) -> Config:
    try:
        return load_config(overrides)
    except errors.ConfigError as exc:
        raise fail(exc, errors.EXIT_CONFIG) from exc
