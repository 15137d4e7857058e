"""`sandboxrunner top`: the terminal dashboard. Renders one `Snapshot`; never writes.

Three ways to run it (the data and its JSON shape are documented in ``snapshot.py``):

  top            full screen (rich Live on the alternate screen), one snapshot a second;
                 ``q`` or Ctrl-C quits. Keys are read from stdin in cbreak mode with a
                 select() in the refresh loop; the terminal is restored on any exit. When
                 Redis is unreachable the screen says so and keeps retrying.
  top --once     prints one snapshot rendered at the terminal's width (``--width N`` forces
                 it) and exits; plain text when stdout is not a terminal.
  top --json     prints one snapshot as JSON and exits.

With ``--once``/``--json`` an unreachable Redis raises `RedisUnavailable` (the CLI prints
it, address without password, and exits with EXIT_REDIS).

Which Redis: the configured URL (REDIS_URL, ``--redis-url``, pyproject); without one, the
project's embedded server if it runs. `top` never starts the embedded server: a dashboard
that starts an empty server would show a healthy, idle system that isn't the real one.

Narrow terminals: below NARROW_WIDTH columns the less important columns (where a job
runs, a queue's supervisors, a supervisor's queues, a failure's queue, cron patterns) are
dropped, so queues and running jobs stay legible at 80 columns.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .config import Config
from .errors import RedisUnavailable
from .joblog import display_level
from .snapshot import Snapshot, SnapshotReader

NARROW_WIDTH = 100
WIDE_WIDTH = 140
RUNNING_SHOWN = 20
SPARK = "▁▂▃▄▅▆▇█"
LEVEL_STYLES = {"debug": "dim", "info": "", "warn": "yellow", "warning": "yellow",
                "error": "bold red"}
STATE_STYLES = {"live": "green", "late": "yellow", "gone": "red", "busy": "cyan",
                "idle": "green", "starting": "dim", "dying": "red"}


def resolve_url(config: Config) -> str:
    """The Redis URL to watch: configured, else the running embedded server; never starts one."""
    if config.redis_url:
        return config.redis_url
    from .embedded import embedded_status

    status = embedded_status(config.project_dir)
    if status is None:
        raise RedisUnavailable(
            f"no Redis URL is configured (REDIS_URL, --redis-url or [tool.sandboxrunner] "
            f"redis_url) and no embedded server runs for {config.project_dir}; `top` does not "
            f"start one: start a supervisor (`sandboxrunner start`) or set REDIS_URL")
    return str(status["url"])


def run_top(config: Config, *, once: bool = False, as_json: bool = False,
            width: int | None = None, refresh_s: float = 1.0) -> None:
    if not (once or as_json):
        run_live(config, refresh_s)
        return
    reader = SnapshotReader(config, resolve_url(config))
    try:
        snap = reader.read()
    finally:
        reader.close()
    if as_json:
        sys.stdout.write(json.dumps(snap.to_json(), indent=2) + "\n")
        return
    console = Console(width=width, soft_wrap=False)
    with console.capture() as captured:
        console.print(render(snap, console.width))
    # tables pad every line to the full width: trim it, for files and bug reports
    sys.stdout.write("\n".join(line.rstrip() for line in captured.get().splitlines()) + "\n")


# -- formatting --------------------------------------------------------------------------


def fmt_duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 10 * 2**30 else f"{n / 2**30:.1f} GiB"


def fmt_clock(epoch_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch_ms / 1000))


def short_id(job_id: str | None) -> str:
    """The first 8 hex digits of ``queue-<hex>``: enough to tell jobs apart on screen."""
    if not job_id:
        return "-"
    return job_id.partition("-")[2][:8] or job_id[:8]


def sparkline(values: tuple[int, ...], width: int) -> str:
    """VALUES summed into WIDTH buckets, as block characters scaled to the largest."""
    width = max(1, min(width, len(values)))
    buckets = [sum(values[i * len(values) // width:(i + 1) * len(values) // width])
               for i in range(width)]
    top = max(buckets)
    if top == 0:
        return SPARK[0] * width
    return "".join(SPARK[0] if b == 0 else SPARK[max(1, round(b / top * 7))] for b in buckets)


def time_bar(elapsed_ms: int, timeout_ms: int, width: int) -> Text:
    """Elapsed against the timeout; yellow past 70 %, red past 90 %. Legible without colour."""
    fraction = min(1.0, elapsed_ms / timeout_ms) if timeout_ms > 0 else 0.0
    filled = round(fraction * width)
    style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.7 else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"))


def _table(title: str, *columns: tuple[str, str]) -> Table:
    """A borderless table. A column whose justify ends in ``~`` is the one that gives way
    when the row is too wide (cut with an ellipsis); the others keep their full width."""
    table = Table(title=title, title_justify="left", title_style="bold", box=None,
                  header_style="bold dim", pad_edge=False, padding=(0, 1), show_edge=False)
    for name, justify in columns:
        flexible = justify.endswith("~")
        # rich shrinks wrappable columns first; cells stay one line through _cell()
        table.add_column(name, justify=justify.rstrip("~"),  # type: ignore[arg-type]
                         no_wrap=not flexible, overflow="ellipsis")
    return table


def _cell(value: str | Text) -> Text:
    """One line, cut with an ellipsis: a flexible column's cells never wrap."""
    text = Text(value) if isinstance(value, str) else value
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


# -- sections ----------------------------------------------------------------------------


def render(snap: Snapshot, width: int, height: int | None = None,
           console: Console | None = None, hint: str = "") -> RenderableType:
    """The whole dashboard at WIDTH columns; with HEIGHT the log tail fills what is left
    (a taller screen is cropped from the bottom, so the order is by importance)."""
    parts: list[RenderableType] = [
        header(snap, width, hint), queues_table(snap, width), running_table(snap, width),
        supervisors_table(snap, width), failures_table(snap, width), cron_table(snap, width),
    ]
    log_rows = len(snap.logs)
    if height is not None and console is not None:
        used = len(console.render_lines(Group(*parts), console.options.update(width=width),
                                        pad=False))
        log_rows = max(0, height - used - 1)  # the log tail's title takes one
    parts.append(logs_table(snap, width, log_rows))
    return Group(*parts)


def header(snap: Snapshot, width: int, hint: str = "") -> Text:
    totals = snap.totals()
    count = totals["supervisors"]
    title = Text.assemble(("sandboxrunner top", "bold reverse"), "  ",
                          fmt_clock(snap.server_time_ms), "  ",
                          (f"{count} supervisor{'s' if count != 1 else ''}", "bold"),
                          (f"  {hint}" if hint else "", "dim"))
    address = Text.assemble((snap.redis_url, "bold"), f" ({snap.redis_version})")
    # the address goes on its own line when both don't fit
    title.append("  " if title.cell_len + 2 + address.cell_len <= width else "\n")
    title.append_text(address)
    title.append_text(Text.assemble(
        "\nwaiting ", (f"{totals['waiting']:,}", "bold"),
        "  active ", (f"{totals['active']:,}", "bold cyan"),
        "  completed ", (f"{totals['completed']:,}", "bold green"),
        "  failed ", (f"{totals['failed']:,}", "bold red" if totals["failed"] else "bold"),
        "  ", (f"{totals['jobs_per_s']:.2f}", "bold"), " jobs/s"))
    return title


def queues_table(snap: Snapshot, width: int) -> Table:
    narrow = width < NARROW_WIDTH
    spark_width = 10 if narrow else 30 if width >= WIDE_WIDTH else 20
    cols = [("queue", "left"), ("waiting", "right"), ("active", "right"),
            ("completed", "right"), ("failed", "right"), ("jobs/s", "right"),
            ("last 60s", "left"), ("oldest", "right")]
    if not narrow:
        cols += [("retry", "right"), ("sups", "right")]
    table = _table("queues", *cols)
    for q in snap.queues:
        row: list[RenderableType] = [
            Text(q.name, style="bold"), f"{q.waiting:,}", Text(f"{q.active:,}", style="cyan"),
            f"{q.completed:,}", Text(f"{q.failed:,}", style="red" if q.failed else ""),
            f"{q.jobs_per_s:.2f}", Text(sparkline(q.rate_per_s, spark_width), style="green"),
            fmt_duration(q.oldest_waiting_ms),
        ]
        if not narrow:
            style = "red" if q.supervisors == 0 and q.waiting else ""
            row += [Text(f"{q.delayed:,}", style="yellow" if q.delayed else ""),
                    Text(str(q.supervisors), style=style)]
        table.add_row(*row)
    return table


def running_table(snap: Snapshot, width: int) -> RenderableType:
    narrow = width < NARROW_WIDTH
    title = f"running jobs ({len(snap.running)})"
    if not snap.running:
        return Text.assemble((title, "bold"), ("  none", "dim"), "\n")
    cols = [("id", "left"), ("name", "left~"), ("queue", "left")]
    cols += [] if narrow else [("where", "left~")]
    cols += [("elapsed / timeout", "left"), ("", "right")]
    table = _table(title, *cols)
    bar_width = 10 if narrow else 24 if width >= WIDE_WIDTH else 16
    for job in snap.running[:RUNNING_SHOWN]:
        row: list[RenderableType] = [short_id(job.id), _cell(Text(job.name, style="bold")),
                                     job.queue]
        if not narrow:
            worker = "thread" if job.worker == "thread" else f"child {job.worker}"
            row.append(_cell(f"{job.host}:{job.supervisor_pid} {worker}"))
        row += [time_bar(job.elapsed_ms, job.timeout_ms, bar_width),
                f"{fmt_duration(job.elapsed_ms)} / {fmt_duration(job.timeout_ms)}"]
        table.add_row(*row)
    if len(snap.running) > RUNNING_SHOWN:
        table.add_row(Text(f"… {len(snap.running) - RUNNING_SHOWN} more", style="dim"))
    return table


def supervisors_table(snap: Snapshot, width: int) -> RenderableType:
    narrow = width < NARROW_WIDTH
    title = f"supervisors ({snap.live_supervisors()})"
    if not snap.supervisors:
        return Text.assemble((title, "bold"), ("  none heartbeating", "dim"), "\n")
    cols = [("host", "left~"), ("pid", "right"), ("state", "left"), ("mode", "left")]
    cols += [] if narrow else [("queues", "left")]
    cols += [("uptime", "right"), ("cpu", "right"), ("mem", "right"), ("jobs", "left~")]
    table = _table(title, *cols)
    for sup in snap.supervisors:
        row: list[RenderableType] = [
            _cell(Text(sup.host, style="bold")), str(sup.pid),
            Text(sup.state, style=STATE_STYLES.get(sup.state, "")), sup.mode]
        row += [] if narrow else [",".join(sup.queues)]
        if sup.state == "gone":
            row += ["", "", "", _cell(Text(
                f"last seen {fmt_duration(sup.heartbeat_age_ms)} ago", style="dim"))]
        else:
            row += [fmt_duration(sup.uptime_ms), f"{sup.cpu_percent:.0f}%",
                    fmt_bytes(sup.rss_bytes), _cell(f"{sup.busy}/{sup.capacity} busy")]
        table.add_row(*row)
        for child in sup.children:
            job = f"{child.job_name} {short_id(child.job_id)} · " if child.job_id else ""
            row = [_cell(Text("  └ child", style="dim")), str(child.pid),
                   Text(child.state, style=STATE_STYLES.get(child.state, "")), child.queue]
            row += [] if narrow else [""]
            row += ["", f"{child.cpu_percent:.0f}%", fmt_bytes(child.rss_bytes),
                    _cell(f"{job}{child.jobs_served} served")]
            table.add_row(*row)
    return table


def failures_table(snap: Snapshot, width: int) -> RenderableType:
    narrow = width < NARROW_WIDTH
    if not snap.failures:
        return Text.assemble(("recent failures", "bold"), ("  none", "dim"), "\n")
    cols = [("ago", "right"), ("id", "left")] + ([] if narrow else [("queue", "left")])
    table = _table("recent failures", *cols, ("name", "left~"), ("error", "left~"))
    for f in snap.failures:
        ago = fmt_duration(max(0, snap.server_time_ms - f.ended_ms)) if f.ended_ms else "-"
        row: list[RenderableType] = [ago, short_id(f.id)]
        row += [] if narrow else [f.queue]
        error = Text.assemble((f.error_type or "?", "bold red"), ": ", f.message)
        table.add_row(*row, _cell(f.name or "-"), _cell(error))
    return table


def cron_table(snap: Snapshot, width: int) -> RenderableType:
    narrow = width < NARROW_WIDTH
    if not snap.cron:
        return Text.assemble(("cron", "bold"), ("  no schedules", "dim"), "\n")
    cols = [("queue", "left"), ("job", "left~")] + ([] if narrow else [("pattern", "left~")])
    table = _table("cron", *cols, ("next", "right"), ("last outcome", "left~"),
                   ("runs", "right"))
    for c in snap.cron:
        next_run = (f"in {fmt_duration(max(0, c.next_ms - snap.server_time_ms))}"
                    if c.next_ms else "-")
        outcome = Text(f"error: {c.error}", style="red") if c.error else Text(
            c.last_outcome or "-",
            style={"completed": "green", "failed": "red", "skipped": "yellow"}.get(
                c.last_outcome or "", ""))
        row: list[RenderableType] = [c.queue, _cell(Text(c.job, style="bold"))]
        row += [] if narrow else [_cell(f"{c.pattern} {c.tz}".strip())]
        table.add_row(*row, next_run, _cell(outcome), str(c.runs))
    return table


def logs_table(snap: Snapshot, width: int, rows: int) -> RenderableType:
    title = Text("log tail", style="bold")
    if not snap.logs:
        return Text.assemble(title, ("  no log lines", "dim"))
    lines = [title]
    for line in snap.logs[len(snap.logs) - rows:] if rows else ():
        level = display_level(line.level, line.source)  # as `logs` shows it
        style = LEVEL_STYLES.get(line.level, "")
        lines.append(Text.assemble(
            (fmt_clock(line.ts_ms), "dim"), " ", (f"{level[:5]:5}", style or "dim"), " ",
            (short_id(line.job_id), "dim"), " ", (line.msg, style),
            no_wrap=True, overflow="ellipsis"))
    return Group(*lines)


# -- the live screen ---------------------------------------------------------------------


class _Screen:
    """What the live screen shows each refresh: the dashboard, or that Redis is unreachable
    (above the last snapshot, if any). Resolves the URL lazily, so it can wait for Redis."""

    def __init__(self, config: Config, console: Console, refresh_s: float) -> None:
        self.config, self.console, self.refresh_s = config, console, refresh_s
        self.reader: SnapshotReader | None = None
        self.last: Snapshot | None = None
        self.failing_since: float | None = None
        self.attempts = 0

    def frame(self) -> RenderableType:
        width, height = self.console.size
        try:
            if self.reader is None:
                self.reader = SnapshotReader(self.config, resolve_url(self.config))
            snap = self.reader.read()
        except RedisUnavailable as exc:
            return self._unreachable(exc, width, height)
        self.last, self.failing_since, self.attempts = snap, None, 0
        return render(snap, width, height, self.console,
                      hint=f"q quits · every {self.refresh_s:g}s")

    def _unreachable(self, exc: RedisUnavailable, width: int, height: int) -> RenderableType:
        self.failing_since = self.failing_since or time.time()
        self.attempts += 1
        since = time.strftime("%H:%M:%S", time.localtime(self.failing_since))
        panel = Panel(Text.assemble(
            (str(exc), "bold"), f"\nretrying every {self.refresh_s:g}s since {since} "
            f"(attempt {self.attempts}) · q quits"),
            title="Redis unreachable", title_align="left", border_style="red")
        if self.last is None:
            return panel
        return Group(panel, Text("last snapshot:", style="dim"),
                     render(self.last, width, max(5, height - 6), self.console))

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


@contextmanager
def _keys_from_stdin() -> Iterator[Callable[[float], bool]]:
    """Yields wait(timeout_s) -> True when q was pressed; stdin in cbreak mode meanwhile."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        def sleep(timeout_s: float) -> bool:
            time.sleep(timeout_s)
            return False

        yield sleep
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd, termios.TCSANOW)  # keys arrive one by one; Ctrl-C stays SIGINT

    def wait(timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                pressed = os.read(fd, 64)
                if not pressed or b"q" in pressed.lower():
                    return True  # q, or stdin closed: nobody is left to press it
        return False

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_live(config: Config, refresh_s: float = 1.0) -> None:
    """The full-screen dashboard until q, Ctrl-C, SIGTERM or SIGHUP; restores the terminal."""
    screen = _Screen(config, Console(), refresh_s)

    def leave(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)  # unwinds through the finally blocks that restore the terminal

    previous = {s: signal.signal(s, leave) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with _keys_from_stdin() as wait, Live(console=screen.console, screen=True,
                                              auto_refresh=False) as live:
            while True:
                live.update(screen.frame(), refresh=True)
                if wait(refresh_s):
                    return
    except KeyboardInterrupt:
        return
    finally:
        screen.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
