"""How `sandboxrunner top` draws one `Snapshot` with rich: the formatting of durations,
sizes, ids, sparklines and time bars, and one function per section of the dashboard
(header, queues, running jobs, supervisors, failures, cron, log tail). Pure: nothing
here reads Redis or the terminal; top.py does, and hands the snapshot over.

Narrow terminals: below NARROW_WIDTH columns the less important columns (where a job
runs, a queue's jobs/s besides its sparkline, its retries and supervisors, a
supervisor's queues, a failure's queue, cron patterns) are dropped, so queues and
running jobs stay legible at 80 columns.
"""

from __future__ import annotations

import time

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .joblog import display_level
from .snapshot import Snapshot
from .snapshot_records import CronInfo, RedisMemory

NARROW_WIDTH = 100
WIDE_WIDTH = 140
RUNNING_SHOWN = 20
SPARK = "▁▂▃▄▅▆▇█"
LEVEL_STYLES = {"debug": "dim", "info": "", "warn": "yellow", "warning": "yellow",
                "error": "bold red"}
STATE_STYLES = {"live": "green", "late": "yellow", "gone": "red", "busy": "cyan",
                "idle": "green", "starting": "dim", "dying": "red"}


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


def progress_bar(fraction: float | None, width: int) -> Text:
    """A job's ctx.progress as a bar and a percentage; blank if it never reported."""
    if fraction is None:
        return Text("")
    filled = round(fraction * width)
    return Text.assemble(("█" * filled, "cyan"), ("░" * (width - filled), "dim"),
                         f" {fraction * 100:3.0f}%")


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
        header(snap, width, hint), *nodes_table(snap), queues_table(snap, width),
        running_table(snap, width),
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
    address = Text.assemble((snap.redis_url, "bold"), f" ({snap.redis_version}",
                            *_memory(snap.redis_memory), ")")
    # the address goes on its own line when both don't fit
    title.append("  " if title.cell_len + 2 + address.cell_len <= width else "\n")
    title.append_text(address)
    counts = [Text.assemble(label, (f"{totals[key]:,}", style)) for label, key, style in (
        ("waiting ", "waiting", "bold"), ("prefetched ", "prefetched", "bold"),
        ("running ", "running", "bold cyan"), ("completed ", "completed", "bold green"),
        ("failed ", "failed", "bold red" if totals["failed"] else "bold"))]
    counts.append(Text.assemble((f"{totals['jobs_per_s']:.2f}", "bold"), " jobs/s"))
    if totals["orphaned"]:
        counts.append(Text.assemble("orphaned ", (f"{totals['orphaned']:,}", "bold red")))
    throttled = sum(q.throttled for q in snap.queues)  # on a narrow screen too
    if throttled:
        counts.append(Text.assemble("throttled ", (f"{throttled:,}", "bold yellow")))
    line = Text()
    for part in counts:  # whole words per line: a count is never split from its label
        if line.cell_len and line.cell_len + 2 + part.cell_len > width:
            title.append_text(Text("\n").append_text(line))
            line = Text()
        line.append_text(Text("  ") if line.cell_len else Text()).append_text(part)
    title.append_text(Text("\n").append_text(line))
    return title


def nodes_table(snap: Snapshot) -> list[Table]:
    """A cluster's masters, with the queues each holds (none for one server)."""
    if len(snap.nodes) < 2:
        return []
    table = _table("nodes", ("address", "left~"), ("role", "left"), ("queues", "left~"),
                   ("clients", "right"), ("memory", "right"), ("policy", "left"),
                   ("ops/s", "right"), ("replicas", "right"))
    for n in snap.nodes:
        table.add_row(_cell(n.address), n.role, _cell(" ".join(n.queues) or "-"),
                      f"{n.clients:,}", fmt_bytes(n.used_memory_bytes),
                      _policy_cell(n.maxmemory_policy), f"{n.ops_per_s:,}", str(n.replicas))
    return [table]


def _policy_cell(policy: str) -> str | Text:
    """A node's maxmemory-policy, red when it may evict jobs."""
    if RedisMemory(0, 0, policy).may_evict:
        return Text(policy, style="bold red")
    return policy or "-"


def _memory(memory: RedisMemory) -> list[str | tuple[str, str]]:
    """Redis's maxmemory-policy (red when it may evict jobs), after its memory use and
    limit if it has one."""
    if not memory.policy:  # INFO refused, or a server that does not say
        return []
    used = (f"{fmt_bytes(memory.used_bytes)} of {fmt_bytes(memory.maxmemory_bytes)} "
            if memory.maxmemory_bytes else "")
    if memory.may_evict:
        return [f", {used}", (f"{memory.policy}: may evict jobs", "bold red")]
    return [f", {used}{memory.policy}"]


def queues_table(snap: Snapshot, width: int) -> Table:
    # narrow: the rate only as the sparkline (the header has the total jobs/s); wide: a
    # column of orphaned jobs while there are any (the header counts them at any width)
    narrow = width < NARROW_WIDTH
    spark_width = 10 if narrow else min(30, 10 + width - NARROW_WIDTH)
    orphans = width >= WIDE_WIDTH and any(q.orphaned for q in snap.queues)
    cols = [("queue", "left"), ("waiting", "right"), ("prefetched", "right"),
            ("running", "right"), ("completed", "right"), ("failed", "right")]
    cols += [] if narrow else [("jobs/s", "right")]
    cols += [("last 60s", "left"), ("oldest", "right")]
    cols += [] if narrow else [("delayed", "right"), ("throttled", "right"), ("sups", "right")]
    table = _table("queues", *cols, *([("orphaned", "right")] if orphans else []))
    for q in snap.queues:
        row: list[RenderableType] = [
            Text.assemble((q.name, "bold"), (" paused", "bold yellow") if q.paused else ""),
            f"{q.waiting:,}", f"{q.prefetched:,}",
            Text(f"{q.running:,}", style="cyan"), f"{q.completed:,}",
            Text(f"{q.failed:,}", style="red" if q.failed else "")]
        row += [] if narrow else [f"{q.jobs_per_s:.2f}"]
        row += [Text(sparkline(q.rate_per_s, spark_width), style="green"),
                fmt_duration(q.oldest_waiting_ms)]
        if not narrow:
            style = "red" if q.supervisors == 0 and q.waiting else ""
            row += [Text(f"{q.delayed:,}", style="yellow" if q.delayed else ""),
                    Text(f"{q.throttled:,}", style="yellow" if q.throttled else ""),
                    Text(str(q.supervisors), style=style)]
        if orphans:
            row.append(Text(f"{q.orphaned:,}", style="red" if q.orphaned else ""))
        table.add_row(*row)
    return table


def running_table(snap: Snapshot, width: int) -> RenderableType:
    narrow = width < NARROW_WIDTH
    # the count is read live; the rows come with the supervisors' heartbeats
    count = max(sum(q.running for q in snap.queues), len(snap.running))
    unlisted = count - len(snap.running)
    title = f"running jobs ({count})"
    if not count:
        return Text.assemble((title, "bold"), ("  none", "dim"), "\n")
    note = Text(f"… {unlisted} just started, listed at the next heartbeat", style="dim",
                no_wrap=True, overflow="ellipsis")
    if not snap.running:
        return Group(Text(title, style="bold"), note, Text())
    cols = [("id", "left"), ("name", "left~"), ("queue", "left")]
    cols += [] if narrow else [("where", "left~")]
    cols += [("elapsed / timeout", "left"), ("", "right")]
    reported = any(job.progress is not None for job in snap.running[:RUNNING_SHOWN])
    cols += [("progress", "left")] if reported else []
    table = _table(title, *cols)
    bar_width = 10 if narrow else 24 if width >= WIDE_WIDTH else 16
    if reported:  # room for the progress column
        bar_width = 6 if narrow else bar_width // 2
    for job in snap.running[:RUNNING_SHOWN]:
        row: list[RenderableType] = [short_id(job.id), _cell(Text(job.name, style="bold")),
                                     job.queue]
        if not narrow:
            worker = "thread" if job.worker == "thread" else f"child {job.worker}"
            row.append(_cell(f"{job.host}:{job.supervisor_pid} {worker}"))
        row += [time_bar(job.elapsed_ms, job.timeout_ms, bar_width),
                f"{fmt_duration(job.elapsed_ms)} / {fmt_duration(job.timeout_ms)}"]
        if reported:
            row.append(progress_bar(job.progress, bar_width))
        table.add_row(*row)
    if len(snap.running) > RUNNING_SHOWN:
        table.add_row(Text(f"… {len(snap.running) - RUNNING_SHOWN} more", style="dim"))
    return Group(table, note) if unlisted else table


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
            orphaned = Text(f" · {sup.orphaned} orphaned", style="red") if sup.orphaned else ""
            row += ["", "", "", _cell(Text.assemble(
                (f"last seen {fmt_duration(sup.heartbeat_age_ms)} ago", "dim"), orphaned))]
        else:
            prefetched = f" · {sup.prefetched} prefetched" if sup.prefetched else ""
            row += [fmt_duration(sup.uptime_ms), f"{sup.cpu_percent:.0f}%",
                    fmt_bytes(sup.rss_bytes),
                    _cell(f"{sup.busy}/{sup.capacity} busy{prefetched}")]
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
    served = {q.name for q in snap.queues if q.supervisors}
    for c in snap.cron:
        next_run = _next_run(c, snap.server_time_ms, c.queue in served)
        outcome = Text(f"error: {c.error}", style="red") if c.error else Text(
            c.last_outcome or "-",
            style={"completed": "green", "failed": "red", "skipped": "yellow"}.get(
                c.last_outcome or "", ""))
        row: list[RenderableType] = [c.queue, _cell(Text(c.job, style="bold"))]
        row += [] if narrow else [_cell(f"{c.pattern} {c.tz}".strip())]
        table.add_row(*row, next_run, _cell(outcome), str(c.runs))
    return table


def _next_run(cron: CronInfo, now_ms: int, served: bool) -> Text:
    """When the schedule fires next; a schedule of a queue nobody serves fires never, so a
    time (past, once due) would mislead: `sandboxrunner cron` says the same."""
    if not served:
        return Text("no supervisor", style="yellow")
    if not cron.next_ms:
        return Text("-")
    return Text(f"in {fmt_duration(max(0, cron.next_ms - now_ms))}")


def logs_table(snap: Snapshot, width: int, rows: int) -> RenderableType:
    title = Text("log tail", style="bold")
    if not snap.logs:
        return Text.assemble(title, ("  no log lines", "dim"))
    lines = [title]
    for line in snap.logs[len(snap.logs) - rows:] if rows else ():
        # prints, and in process mode what fd 1/2 carried (source "output"), show as out/err
        level = display_level(line.level, line.source)  # as `logs` shows it
        style = LEVEL_STYLES.get(line.level, "")
        lines.append(Text.assemble(
            (fmt_clock(line.ts_ms), "dim"), " ", (f"{level[:5]:5}", style or "dim"), " ",
            (short_id(line.job_id), "dim"), " ", (line.msg, style),
            no_wrap=True, overflow="ellipsis"))
    return Group(*lines)
