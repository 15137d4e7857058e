"""What `sandboxrunner jobs` and `sandboxrunner cron` print: plain text lines, greppable,
never truncated or wrapped. The commands in cli.py only load and echo; the wording lives
here so that it is tested once and said the same way everywhere."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .config import Config
from .registry import Registry, describe


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """ROWS as plain aligned columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def short_path(source: str) -> str:
    """A job's source, a file path relative to the current directory where that is shorter."""
    try:
        return os.path.relpath(source) if os.path.isabs(source) else source
    except ValueError:
        return source


def jobs_lines(registry: Registry, config: Config) -> list[str]:
    """`sandboxrunner jobs`: one row per job, or where no job was found."""
    if not registry.names():
        return [f"No jobs found in {config.jobs_dir} (no *.py job files there, and none from "
                "register_job or plugins)"]
    rows = [("name", "queue", "cron", "singleton", "timeout_ms", "source")]
    for name in registry.names():
        d = describe(registry.get(name))
        rows.append((d["name"], d["queue"], d["cron"] or "-", d["singleton"] or "-",
                     str(d["timeout_ms"] or config.job_timeout), short_path(d["source"])))
    return columns(rows)


def _iso(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe_schedule(row: dict[str, Any]) -> tuple[str, ...]:
    """One line of `sandboxrunner cron`: queue, job, pattern, tz, next, last, outcome, runs."""
    outcome = row["last_outcome"] or "-"
    if row["error"]:
        outcome = f"error: {row['error']}"
    elif row["last_skipped"]:
        outcome = f"skipped ({row['last_job_id']} in flight)"
    elif row["last_job_id"]:
        outcome = f"{outcome} ({row['last_job_id']})"
    return (row["queue"], row["job"], row["pattern"], row["tz"], _iso(row["next_ms"]),
            _iso(row["last_tick_ms"]), outcome, f"{row['runs']}/{row['skips']}")


SCHEDULE_COLUMNS = ("queue", "job", "pattern", "tz", "next", "last", "last outcome",
                    "runs/skips")


def cron_lines(rows: list[dict[str, Any]]) -> list[str]:
    """`sandboxrunner cron`: one row per schedule (rows from cron_state.list_schedules)."""
    if not rows:
        return ["No cron schedules in Redis (a supervisor syncs them when it starts)"]
    return columns([SCHEDULE_COLUMNS, *(describe_schedule(row) for row in rows)])
