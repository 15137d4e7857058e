"""What the job-control commands print (`job`, and the rows of `list`): plain text lines,
greppable, never wrapped. The commands in cli_ctl.py only call the library and echo."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .errors import InvalidJobState
from .job_control import CancelResult, JobInfo
from .job_listing import JobPage, failed_job_ids
from .listings import columns

if TYPE_CHECKING:
    from .client import Client

LABEL_WIDTH = 12


def when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def progress_text(info: JobInfo) -> str:
    if info.progress is None:
        return "-"
    message = f" {info.progress.message}" if info.progress.message else ""
    return f"{info.progress.fraction * 100:.0f}%{message}"


def job_lines(info: JobInfo) -> list[str]:
    """`sandboxrunner job ID`: one ``label value`` line per fact, then each failed
    attempt's error."""
    where = info.supervisor or "-"
    if info.child_pid is not None:
        where += f" (child {info.child_pid})"
    rows = [("id", info.id), ("name", info.name), ("queue", info.queue),
            ("status", info.status + (" (cancel requested: it stops within a heartbeat)"
                                      if info.cancel_requested else "")),
            ("progress", progress_text(info)),
            ("attempts", f"{info.attempts} (retries allowed: {info.retries})"),
            ("enqueued", when(info.enqueued_at)), ("started", when(info.started_at)),
            ("ended", when(info.ended_at)), ("supervisor", where)]
    if info.due_at is not None:
        rows.append(("due", when(info.due_at)))
    if info.stalled:
        rows.append(("stalled", str(info.stalled)))
    if info.status == "completed":
        rows.append(("result", json.dumps(info.result)))
    if info.error is not None:
        rows.append(("error", f"{info.error.type}: {_first_line(info.error.message)}"))
    for n, error in enumerate(info.errors, 1):
        rows.append((f"attempt {n}", f"{error.type}: {_first_line(error.message)}"))
    return [f"{label:<{LABEL_WIDTH}}{value}" for label, value in rows]


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def cancel_line(done: CancelResult, supervisor: str | None) -> str:
    """`sandboxrunner cancel ID`: what the cancel did."""
    if done.outcome == "cancelled":
        return f"cancelled {done.job_id}: it had not started, and never runs"
    if done.outcome == "cancelling":
        return (f"cancelling {done.job_id}: it runs on supervisor {supervisor or '?'}, which "
                f"stops it within a heartbeat")
    return f"{done.job_id} is already {done.status}: nothing changed"


def list_lines(page: JobPage, args: str) -> list[str]:
    """`sandboxrunner list`: one row per job, then how to get the next page (ARGS: the
    options the page was asked with)."""
    if not page.items:
        lines = ["no such jobs"]
    else:
        rows = [("id", "queue", "status", "name", "attempts", "enqueued", "ended", "progress")]
        rows += [(i.id, i.queue, i.status, i.name, str(i.attempts), when(i.enqueued_at),
                  when(i.ended_at), progress_text(i)) for i in page.items]
        lines = columns(rows)
    if page.cursor is not None:
        lines.append(f"more: sandboxrunner list {args + ' ' if args else ''}"
                     f"--cursor {page.cursor}")
    return lines


def retry_failed_lines(client: Client, queue: str | None, name: str | None) -> list[str]:
    """`sandboxrunner retry --failed`: retries each failed job, a line each, and a total."""
    lines, retried = [], 0
    for job_id in failed_job_ids(client, queue, name):
        try:
            client.retry(job_id)
        except InvalidJobState as exc:  # it moved on, or its singleton key is held
            lines.append(f"skipped {job_id}: {exc}")
            continue
        retried += 1
        lines.append(f"retried {job_id}")
    where = (f" of queue {queue}" if queue else "") + (f" named {name}" if name else "")
    return [*lines, f"retried {retried} failed job(s){where}"]
