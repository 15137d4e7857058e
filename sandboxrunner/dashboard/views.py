"""Turning what the library reads (Snapshot, JobInfo, JobPage, log rows) into what the
templates show: the Jinja2 environment (autoescape on for every template, strict
undefined), its filters (durations, sizes, clocks, short ids: the same formatting `top`
uses, top_render.py) and the few shapes a template cannot easily compute itself (bar
heights of a chart, a job's timings, JSON laid out for reading). Pure: nothing here reads
Redis.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ..job_control import JobInfo
from ..joblog import display_level
from ..keys import QUEUES
from ..snapshot import Snapshot
from ..snapshot_records import RedisMemory
from ..top_render import fmt_bytes, fmt_clock, fmt_duration, short_id

TEMPLATES = Path(__file__).parent / "templates"
CHART_HEIGHT = 40
RUNNING_SHOWN = 50
# delete: a settled job, or one not running yet; never a running one (cancel it first)
ACTIONS_BY_STATUS = {"queued": ("cancel", "delete"), "delayed": ("cancel", "delete"),
                     "throttled": ("cancel", "delete"), "active": ("cancel",),
                     "completed": ("delete",), "failed": ("retry", "delete"),
                     "cancelled": ("retry", "delete")}


def environment() -> jinja2.Environment:
    """The templates' environment: every value escaped unless a template says otherwise,
    and none does for anything read from Redis."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(duration=fmt_duration, size=fmt_bytes, short=short_id,
                       clock=fmt_clock, when=_when, percent=_percent,
                       label=display_level)
    env.globals.update(may_evict=lambda policy: RedisMemory(0, 0, policy).may_evict,
                       queues=QUEUES)
    return env


def _when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    millis = int(epoch_s * 1000) % 1000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s)) + f".{millis:03d}"


def _percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction * 100:.0f}%"


@dataclass(frozen=True)
class Bar:
    """One bar of a chart: its height in the SVG's units and its tooltip."""

    x: int
    height: int
    title: str


def bars(values: list[float], labels: list[str]) -> list[Bar]:
    """VALUES as bars scaled to the largest (CHART_HEIGHT), each with its label."""
    top = max(values, default=0) or 1
    return [Bar(i, max(1 if v else 0, round(v / top * CHART_HEIGHT)), label)
            for i, (v, label) in enumerate(zip(values, labels, strict=True))]


def rate_bars(rate_per_s: tuple[int, ...]) -> list[Bar]:
    """A queue's completions per second over the last minute (oldest first)."""
    n = len(rate_per_s)
    return bars([float(v) for v in rate_per_s],
                [f"{v} job(s) {n - i}s ago" for i, v in enumerate(rate_per_s)])


def history_bars(history: list[tuple[int, float]]) -> list[Bar]:
    """Jobs/s per bucket over the last minutes, as this dashboard process saw them."""
    return bars([rate for _, rate in history],
                [f"{fmt_clock(ms)} {rate:.2f} jobs/s" for ms, rate in history])


def overview(snap: Snapshot, history: list[tuple[int, float]]) -> dict[str, Any]:
    """What the overview template needs besides the snapshot itself."""
    count = max(sum(q.running for q in snap.queues), len(snap.running))
    return {"snap": snap, "totals": snap.totals(),
            "queue_bars": {q.name: rate_bars(q.rate_per_s) for q in snap.queues},
            "history": history_bars(history), "chart_height": CHART_HEIGHT,
            "running": snap.running[:RUNNING_SHOWN], "running_count": count,
            "served": {q.name for q in snap.queues if q.supervisors},
            "throttled": sum(q.throttled for q in snap.queues)}


def pretty_json(raw: Any) -> str:
    """A JSON value (or JSON text as stored) laid out for reading; text that is not JSON
    is shown as it is."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw else None
        except ValueError:
            return str(raw)
    return json.dumps(raw, indent=2, ensure_ascii=False, default=str)


def job_timings(info: JobInfo) -> list[tuple[str, str]]:
    """(label, value) rows: when it was enqueued, started and ended, how long it waited
    and ran, when a delayed one is due."""
    rows = [("enqueued", _when(info.enqueued_at)), ("started", _when(info.started_at)),
            ("ended", _when(info.ended_at))]
    if info.enqueued_at and info.started_at:
        rows.append(("waited", fmt_duration(round((info.started_at - info.enqueued_at) * 1000))))
    if info.started_at and info.ended_at:
        rows.append(("ran", fmt_duration(round((info.ended_at - info.started_at) * 1000))))
    if info.due_at:
        rows.append(("due", _when(info.due_at)))
    return rows


def job_actions(info: JobInfo) -> tuple[str, ...]:
    """The actions a job in its status offers."""
    return ACTIONS_BY_STATUS.get(info.status, ())


def json_or_text(raw: str) -> Any:
    """Stored JSON text as its value (for the JSON API); text that is not JSON as text."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


def as_limit(raw: str | None, default: int) -> int:
    """A page size from a query string; list_jobs checks its range."""
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        from ..errors import InvalidJobData

        raise InvalidJobData(f"limit {raw!r} must be a whole number from 1 to 1000") from None
