"""The README's performance tables, written from one results file.

    python -m benchmarks.markdown [benchmarks/results/latest.json]

Prints, in Markdown: the throughput table (one row per variant: each client pattern's
median jobs/s with its min-max, our pipelined row, enqueue calls/s with one client, CPU
per job by side with one client), the round-trip line with the floors measured in the
same run, and the summary's targets with their results. Nothing is typed by hand, so the
README shows what one run measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS_DIR
from benchmarks.patterns import ASYNCIO, ONE_CLIENT, THREADS_8
from benchmarks.report import cpu_sides, summarize

PIPELINED = "pipelined (ours)"


def _rate(row: dict[str, Any] | None) -> str:
    if row is None or row.get("status") != "ok":
        return ""
    low, high = row.get("jobs_per_s_min"), row.get("jobs_per_s_max")
    spread = f" ({low:,.0f}-{high:,.0f})" if low is not None and low != high else ""
    return f"{row['jobs_per_s']:,.0f}{spread}"


def _cpu(row: dict[str, Any] | None) -> str:
    sides = cpu_sides(row) if row else None
    if sides is None:
        return ""
    return " / ".join(f"{v:.3f}" for v in sides) + f" = {sum(sides):.3f}"


def throughput_markdown(rows: list[dict[str, Any]]) -> list[str]:
    by_variant: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], {})[row["pattern"]] = row
    lines = ["| variant | one client, jobs/s | 8 threads | asyncio | pipelined (ours) | "
             "enqueue calls/s, one client | CPU ms/job, one client: client / workers / "
             "redis |", "|---|---|---|---|---|---|---|"]
    for variant, patterns in by_variant.items():
        one = patterns.get(ONE_CLIENT)
        calls = f"{one['enqueues_per_s']:,.0f}" if one and one.get("status") == "ok" else ""
        cells = [_rate(patterns.get(p)) for p in (ONE_CLIENT, THREADS_8, ASYNCIO)]
        pipelined = patterns.get(PIPELINED)
        cells.append(f"{pipelined['jobs_per_s']:,.0f}" if pipelined else "")
        lines.append(f"| {variant} | " + " | ".join([*cells, calls, _cpu(one)]) + " |")
    return lines


def latency_markdown(rows: list[dict[str, Any]]) -> list[str]:
    parts = [f"{row['variant'].removeprefix('baseline: ')} {row['p50_ms']:.2f} / "
             f"{row['p99_ms']:.2f}" for row in rows
             if row.get("status") == "ok" and "p50_ms" in row]
    return ["Round trip (sequential calls on a no-op, p50 / p99 ms), the floors first: "
            + "; ".join(parts) + "."]


def _value(value: float) -> str:
    """A figure as the summary shows it: whole above 100, three digits below."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def summary_markdown(figures: list[dict[str, Any]]) -> list[str]:
    lines = ["| figure | sandboxrunner | best peer | ratio | target | met |",
             "|---|---|---|---|---|---|"]
    for f in figures:
        if not f.get("target"):
            continue
        peer, peer_value, ratio = f.get("best_peer"), f.get("best_peer_value"), f.get("ratio")
        shown_peer = "-" if peer in (None, "-") else (
            peer if peer_value is None else f"{peer} {_value(peer_value)}")
        met = {True: "yes", False: "no"}.get(f.get("met"), "n/a")
        lines.append(f"| {f['figure']} | {_value(f['sandboxrunner'])} | {shown_peer} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} | {f['target']} | {met} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else RESULTS_DIR / "latest.json"
    results = json.loads(path.read_text())
    meta = results.get("meta", {})
    print(f"<!-- from {path.name}: {meta.get('date')}, commit {meta.get('sandboxrunner_commit')}"
          f"{' (dirty)' if meta.get('sandboxrunner_dirty') else ''}, `{meta.get('command')}` -->")
    print()
    if results.get("throughput"):
        print("\n".join(throughput_markdown(results["throughput"])))
        print()
    if results.get("latency"):
        print("\n".join(latency_markdown(results["latency"])))
        print()
    # the summary as report.py makes it now (a target added since the run is shown too)
    print("\n".join(summary_markdown(summarize(results))))


if __name__ == "__main__":
    main()
