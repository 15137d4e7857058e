"""Before and after: the no-op throughput and round trip of this tree's sandboxrunner
against another tree's (such as the commit a branch started from), in one run.

    git archive BASE | tar -x -C /tmp/base      # the tree to compare with
    python -m benchmarks.before_after --before /tmp/base --rounds 3

Each round runs ``python -m benchmarks --only throughput,latency --systems sandboxrunner
--repeat 1`` once in each tree (its own code for the client and the supervisor, its own
throwaway server), alternating before and after, so that both see the machine's load as
it drifts. Per variant it reports the best throughput and the median p50 and p99 round
trip over the rounds, and after / before. The JSON goes to
``benchmarks/results/<date>-before-after.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT
from benchmarks.report import PIPELINED

FIGURES = (("throughput", "jobs_per_s", max), ("latency", "p50_ms", statistics.median),
           ("latency", "p99_ms", statistics.median))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.before_after",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--before", type=Path, required=True,
                   help="the other tree's root (it has sandboxrunner/ and benchmarks/)")
    p.add_argument("--after", type=Path, default=ROOT,
                   help="the tree measured after (default: this one)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each tree, alternating")
    p.add_argument("--n", type=int, default=2000, help="jobs per throughput run")
    p.add_argument("--calls", type=int, default=500, help="timed round trips per variant")
    p.add_argument("--only", default="throughput,latency",
                   help="sections, comma-separated: throughput, latency")
    p.add_argument("--out", type=Path, default=None, help="where the JSON goes")
    return p.parse_args(argv)


def run_tree(tree: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One benchmark run of TREE's code (client and supervisor alike): its JSON (written
    in folder OUT)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tree)
    command = [sys.executable, "-m", "benchmarks", "--only", args.only,
               "--systems", "sandboxrunner", "--repeat", "1", "--n", str(args.n),
               "--calls", str(args.calls), "--out", str(out)]
    subprocess.run(command, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL,
                   timeout=900)
    return dict(json.loads((out / "latest.json").read_text()))


def figures_of(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """variant -> figure -> value, from one run's JSON."""
    table: dict[str, dict[str, float]] = {}
    for section, figure, _ in FIGURES:
        for row in run.get(section, []):
            if (row.get("system") == "sandboxrunner" and row.get("status") == "ok"
                    and row.get("pattern", PIPELINED) == PIPELINED):
                # the pipelined client: what a tree from before the client patterns ran
                table.setdefault(row["variant"], {})[figure] = float(row[figure])
    return table


def summarize(rounds: dict[str, list[dict[str, dict[str, float]]]]) -> list[dict[str, Any]]:
    rows = []
    variants = sorted({v for runs in rounds.values() for run in runs for v in run})
    for variant in variants:
        for _, figure, pick in FIGURES:
            values = {side: [run[variant][figure] for run in runs
                             if figure in run.get(variant, {})] for side, runs in rounds.items()}
            if not all(values.values()):
                continue
            before, after = pick(values["before"]), pick(values["after"])
            rows.append({"variant": variant, "figure": figure, "before": before,
                         "after": after, "after_over_before": round(after / before, 3),
                         "runs": values})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    rounds: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sandboxrunner-before-after-") as tmp:
        for n in range(args.rounds):
            for side, tree in trees.items():
                run = run_tree(tree, args, Path(tmp) / f"{side}-{n}")
                rounds[side].append(figures_of(run))
                print(f"round {n + 1} {side}: {rounds[side][-1]}", flush=True)
    rows = summarize(rounds)
    for row in rows:
        print(f"{row['variant']:<26} {row['figure']:<11} before {row['before']:>10.3f}  "
              f"after {row['after']:>10.3f}  after/before {row['after_over_before']:.3f}")
    out = args.out or ROOT / "benchmarks" / "results" / (
        time.strftime("%Y-%m-%d-") + "before-after.json")
    out.write_text(json.dumps({"trees": {k: str(v) for k, v in trees.items()},
                               "rounds": args.rounds, "n": args.n, "calls": args.calls,
                               "duration_s": round(time.monotonic() - started, 1),
                               "summary": rows, "per_round": rounds}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
