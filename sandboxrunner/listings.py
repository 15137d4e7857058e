"""What `sandboxrunner jobs` and `sandboxrunner cron` print: plain text lines, greppable,
never truncated or wrapped. The commands in cli.py only load and echo; the wording lives
here so that it is tested once and said the same way everywhere."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfoNotFoundError

from croniter import CroniterError

from .config import Config
from .cron_text import describe_pattern, fire_time_text, next_fire_times, seconds_first_warning
from .registry import Registry, describe

if TYPE_CHECKING:
    from .cron_now import ManualRun

NEXT_SHOWN = 3  # next fire times shown per schedule
# a due tick is fired, and its record's next moved on, within milliseconds
OVERDUE_AFTER_MS = 5000


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


def jobs_lines(registry: Registry, config: Config, now_ms: int | None = None) -> list[str]:
    """`sandboxrunner jobs`: one row per job, then each schedule in words; or where no job
    was found. NOW_MS (default: this machine's clock) is where the next fire times start."""
    if not registry.names():
        return [f"No jobs found in {config.jobs_dir} (no *.py job files there, and none from "
                "register_job or plugins)"]
    rows = [("name", "queue", "cron", "singleton", "timeout_ms", "retries", "rate_limit",
             "source")]
    for name in registry.names():
        d = describe(registry.get(name))
        rows.append((d["name"], d["queue"], d["cron"] or "-", d["singleton"] or "-",
                     str(d["timeout_ms"] or config.job_timeout), str(d["retries"]),
                     d["rate_limit"] or "-", short_path(d["source"])))
    lines = columns(rows)
    specs = [registry.get(name) for name in registry.names()]
    crons = [(spec.name, spec.cron) for spec in specs if spec.cron is not None]
    if crons:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        lines += ["", "cron schedules (next fire times by this machine's clock):"]
        for name, cron in crons:
            lines.append(f"{name}: {describe_pattern(cron.pattern, cron.tz)}")
            lines.append(f"  next: {_fire_times(cron.pattern, cron.tz, now_ms)}")
            lines += _warning(cron.pattern)
    return lines


def _fire_times(pattern: str, tz: str, after_ms: int) -> str:
    ticks = next_fire_times(pattern, tz, after_ms, NEXT_SHOWN)
    return ", ".join(fire_time_text(tick, tz) for tick in ticks)


def _warning(pattern: str) -> list[str]:
    warning = seconds_first_warning(pattern)
    return [f"  warning: {warning}"] if warning else []


# -- `sandboxrunner cron` ------------------------------------------------------------------


def _iso(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _not_firing(row: dict[str, Any]) -> str | None:
    """Why ROW's schedule fires nothing now, or None when it fires at its next_ms."""
    if row["live_supervisors"] == 0:
        return f"no supervisor serves {row['queue']}"
    if row["next_ms"] and row["next_ms"] < row["server_ms"] - OVERDUE_AFTER_MS:
        return (f"overdue since {_iso(row['next_ms'])}; no live supervisor of {row['queue']} "
                "fires it")
    return None


def _next_cell(row: dict[str, Any]) -> str:
    if row["error"]:
        return "never"
    why = _not_firing(row)
    if why:
        return f"none: {why.partition(';')[0]}"
    return _iso(row["next_ms"])


def describe_schedule(row: dict[str, Any]) -> tuple[str, ...]:
    """One line of `sandboxrunner cron`: queue, job, pattern, tz, next, last, outcome, runs."""
    outcome = row["last_outcome"] or "-"
    if row["error"]:
        outcome = f"error: {row['error']}"
    elif row["last_skipped"]:
        outcome = f"skipped ({row['last_job_id']} in flight)"
    elif row["last_job_id"]:
        outcome = f"{outcome} ({row['last_job_id']})"
    return (row["queue"], row["job"], row["pattern"], row["tz"], _next_cell(row),
            _iso(row["last_tick_ms"]), outcome, f"{row['runs']}/{row['skips']}")


SCHEDULE_COLUMNS = ("queue", "job", "pattern", "tz", "next", "last", "last outcome",
                    "runs/skips")


def _schedule_block(row: dict[str, Any]) -> list[str]:
    """A schedule in words, its next fire times (or why none), and what to know about it."""
    heading = f"{row['job']} ({row['queue']})"
    try:
        words = describe_pattern(row["pattern"], row["tz"])
        upcoming = _fire_times(row["pattern"], row["tz"], row["server_ms"])
    except (CroniterError, ValueError, KeyError, TypeError, ZoneInfoNotFoundError):
        return [f"{heading}: unreadable schedule {row['pattern']!r} {row['tz']!r}"]
    why = "never: " + row["error"] if row["error"] else _not_firing(row)
    lines = [f"{heading}: {words}", f"  next: {'none: ' + why if why else upcoming}"]
    lines += _warning(row["pattern"])
    if row["manual_runs"]:
        times = "time" if row["manual_runs"] == 1 else "times"
        lines.append(f"  run by hand: {row['manual_runs']} {times}, last at "
                     f"{_iso(row['last_manual_ms'])} as job {row['last_manual_job_id']}")
    if row["newest_sid"] and not row["loaded_by_newest"]:
        lines.append(f"  not loaded by the newest supervisor of {row['queue']} "
                     f"({row['newest_sid']}), which has no job {row['job']}; it is fired only "
                     f"by supervisors that have the job. Gone for good? sandboxrunner cron "
                     f"--remove {row['job']}")
    return lines


def cron_lines(rows: list[dict[str, Any]]) -> list[str]:
    """`sandboxrunner cron`: one row per schedule, then each in words with its next fire
    times (rows from cron_state.list_schedules)."""
    if not rows:
        return ["No cron schedules in Redis (a supervisor syncs them when it starts)"]
    lines = columns([SCHEDULE_COLUMNS, *(describe_schedule(row) for row in rows)])
    lines.append("")
    for row in rows:
        lines += _schedule_block(row)
    return lines


def ran_now_lines(name: str, run: ManualRun) -> list[str]:
    """`sandboxrunner cron --run NAME`: the job it queued, and whether anyone serves it."""
    line = (f"queued {name} ({run.queue}) now as job {run.job_id}: a run by hand, its "
            f"schedule goes on as before")
    if run.live_supervisors == 0:
        line += f"; no supervisor serves {run.queue} yet: it waits for one"
    return [line]


def removed_lines(name: str, queues: list[str]) -> list[str]:
    """`sandboxrunner cron --remove NAME`: what was removed."""
    return [f"Removed cron schedule {name} of {queue}" for queue in queues]
