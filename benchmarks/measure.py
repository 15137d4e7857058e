"""Measuring one variant: its throughput in every client pattern it supports (patterns.py),
sandboxrunner's pipelined row, and its round trip. Each row of the results names its
system, variant, mode and pattern; a failure is that row's n/a, never the run's end."""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.harness import Throughput, Unavailable, Usage, UsageMeter, flushall
from benchmarks.patterns import PATTERNS, PatternRun, run_pattern, summary, supports
from benchmarks.report import PIPELINED
from benchmarks.variant import Variant

WARMUP_JOBS = 200

console = Console(width=160)


def _row(variant: Variant, **extra: Any) -> dict[str, Any]:
    return {**variant.describe(), **extra}


def na_row(system: str, reason: str) -> dict[str, Any]:
    return {"system": system, "variant": system, "mode": "-", "workers": "", "wait_method": "",
            "status": "n/a", "reason": reason}


@dataclass(frozen=True)
class Run:
    """What every section needs: the server and where the worker logs go."""

    url: str
    server_pid: int | None
    logdir: Path


def measure_variant(variant: Variant, run: Run, args: argparse.Namespace,
                    results: dict[str, Any]) -> None:
    url, logdir = run.url, run.logdir
    flushall(url)
    want_tp, want_lat = "throughput" in args.only, "latency" in args.only
    try:
        variant.start(url, logdir)
    except Exception as exc:  # noqa: BLE001 - any failure to start is that variant's n/a
        reason = str(exc) if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}"
        console.log(f"[yellow]{variant.label}: n/a[/] ({reason.splitlines()[0][:200]})")
        for section, wanted in (("throughput", want_tp), ("latency", want_lat)):
            if wanted:
                results[section].append(_row(variant, status="n/a", reason=reason[:2000]))
        return
    try:
        if want_tp:
            rows = measure_throughput(variant, run, args)
            results["throughput"] += rows
            if want_lat and not all(r.get("complete") for r in rows):
                # jobs left over from a partial run would queue ahead of the round trips
                variant.stop()
                flushall(url)
                try:
                    variant.start(url, logdir)
                except Exception as exc:  # noqa: BLE001 - its round trip is n/a
                    results["latency"].append(_row(variant, status="n/a",
                                                   reason=f"restart failed: {exc}"[:2000]))
                    return
        if want_lat:
            results["latency"].append(_measure_latency(variant, args))
    finally:
        variant.stop()


def measure_throughput(variant: Variant, run: Run, args: argparse.Namespace
                       ) -> list[dict[str, Any]]:
    """A row per client pattern VARIANT supports, and sandboxrunner's pipelined row."""
    rows = [_measure_pattern(variant, pattern, run, args)
            for pattern in PATTERNS if supports(variant, pattern)]
    if variant.system == "sandboxrunner" and getattr(variant, "wait", "") == "gather":
        rows.append(_measure_pipelined(variant, run, args))
    return rows


def _measure_pattern(variant: Variant, pattern: str, run: Run,
                     args: argparse.Namespace) -> dict[str, Any]:
    label = f"{variant.label}, {pattern}"
    try:
        run_pattern(variant, pattern, min(WARMUP_JOBS, args.n),
                    time.monotonic() + args.max_seconds)
        runs: list[tuple[PatternRun, Usage]] = []
        for _ in range(max(1, args.repeat)):
            meter = UsageMeter(run.url, run.server_pid, variant.worker_pids())
            result = run_pattern(variant, pattern, args.n, time.monotonic() + args.max_seconds)
            runs.append((result, meter.per_job(result.seen)))
            if not result.complete or sum(r.elapsed_s for r, _ in runs) >= args.max_seconds / 2:
                break  # slow enough that another run would only cost as much again
    except Exception as exc:  # noqa: BLE001 - reported as this row's n/a
        console.log(f"[red]{label} failed[/]: {exc!r}")
        return _row(variant, pattern=pattern, status="n/a",
                    reason=f"{type(exc).__name__}: {exc}"[:500])
    figures = summary([r for r, _ in runs])
    if not any(r.seen for r, _ in runs):
        return _row(variant, pattern=pattern, status="n/a",
                    reason=f"no result within {args.max_seconds:g} s")
    usage = _median_usage([u for _, u in runs])
    console.log(f"{label}: {figures['jobs_per_s']:,.0f} jobs/s median "
                f"({', '.join(f'{r.jobs_per_s:,.0f}' for r, _ in runs)}); enqueue calls/s "
                f"{figures['enqueues_per_s']:,.0f}; per job: client {usage.client_cpu_ms:.3f} "
                f"ms CPU, workers {usage.workers_cpu_ms:.3f}, redis {usage.redis_cpu_ms:.3f}")
    return _row(variant, pattern=pattern, status="ok", **figures, usage=usage.to_json(),
                runs=[{**r.to_json(), "usage": u.to_json()} for r, u in runs])


def _median_usage(usages: list[Usage]) -> Usage:
    """Each figure's median over the runs (the top commands of the middle run)."""
    middle = sorted(usages, key=lambda u: u.redis_calls)[len(usages) // 2]
    return Usage(**{key: statistics.median(getattr(u, key) for u in usages)
                    for key in ("client_cpu_ms", "workers_cpu_ms", "redis_cpu_ms",
                                "redis_calls", "redis_scripts")},
                 top_commands=middle.top_commands)


def _measure_pipelined(variant: Variant, run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """sandboxrunner's own client: arun_job calls kept in flight on one loop."""
    try:
        variant.throughput(min(WARMUP_JOBS, args.n), time.monotonic() + args.max_seconds)
        runs: list[tuple[Throughput, Usage]] = []
        for _ in range(max(1, args.repeat)):
            meter = UsageMeter(run.url, run.server_pid, variant.worker_pids())
            result = variant.throughput(args.n, time.monotonic() + args.max_seconds)
            runs.append((result, meter.per_job(result.seen)))
    except Exception as exc:  # noqa: BLE001 - reported as this row's n/a
        console.log(f"[red]{variant.label} pipelined failed[/]: {exc!r}")
        return _row(variant, pattern=PIPELINED, status="n/a",
                    reason=f"{type(exc).__name__}: {exc}"[:500])
    values = [r.jobs_per_s for r, _ in runs]
    usage = _median_usage([u for _, u in runs])
    console.log(f"{variant.label}, {PIPELINED}: {statistics.median(values):,.0f} jobs/s median "
                f"({', '.join(f'{v:,.0f}' for v in values)})")
    return _row(variant, pattern=PIPELINED, status="ok", wait_method=variant.pipelined_method,
                complete=all(r.complete for r, _ in runs), runs=[
                    {**r.to_json(), "usage": u.to_json()} for r, u in runs],
                jobs_per_s=round(statistics.median(values), 1),
                jobs_per_s_min=round(min(values), 1), jobs_per_s_max=round(max(values), 1),
                usage=usage.to_json())


def _measure_latency(variant: Variant, args: argparse.Namespace) -> dict[str, Any]:
    try:
        latency = variant.roundtrip(args.calls, args.warmup,
                                    time.monotonic() + args.latency_seconds)
    except Exception as exc:  # noqa: BLE001 - reported as this variant's n/a
        console.log(f"[red]{variant.label} round trip failed[/]: {exc!r}")
        return _row(variant, status="n/a", reason=f"{type(exc).__name__}: {exc}"[:500])
    console.log(f"{variant.label}: round trip p50 {latency.p50_ms:.3f} ms, "
                f"p99 {latency.p99_ms:.3f} ms")
    return _row(variant, status="ok", roundtrip_method=getattr(variant, "roundtrip_method", ""),
                **latency.to_json())
