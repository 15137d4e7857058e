"""The README's performance tables (benchmarks/markdown.py) and the CPU-per-job target of
the summary (benchmarks/report.py), from a results file shaped as a run writes it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.markdown import throughput_markdown
from benchmarks.report import summarize

ROOT = Path(__file__).resolve().parent.parent


def _row(system: str, variant: str, mode: str, pattern: str, rate: float,
         cpu: tuple[float, float, float]) -> dict[str, Any]:
    return {"system": system, "variant": variant, "mode": mode, "pattern": pattern,
            "status": "ok", "jobs_per_s": rate, "jobs_per_s_min": rate * 0.9,
            "jobs_per_s_max": rate * 1.1, "enqueues_per_s": rate * 2,
            "usage": {"client_cpu_ms": cpu[0], "workers_cpu_ms": cpu[1],
                      "redis_cpu_ms": cpu[2]}}


ROWS = [
    _row("sandboxrunner", "sandboxrunner threads", "threads", "one client", 3000,
         (0.1, 0.1, 0.1)),
    _row("sandboxrunner", "sandboxrunner threads", "threads", "8 threads", 4000,
         (0.1, 0.1, 0.1)),
    _row("sandboxrunner", "sandboxrunner processes", "processes", "one client", 2500,
         (0.1, 0.2, 0.1)),
    _row("huey", "huey thread", "threads", "one client", 2000, (0.2, 0.4, 0.1)),
    _row("huey", "huey process", "processes", "one client", 1800, (0.3, 0.5, 0.2)),
]


def test_a_variant_is_one_row_with_each_pattern_and_its_cpu_by_side() -> None:
    lines = throughput_markdown(ROWS)
    ours = next(line for line in lines if line.startswith("| sandboxrunner threads |"))
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert cells[1] == "3,000 (2,700-3,300)"  # one client, with its spread
    assert cells[2] == "4,000 (3,600-4,400)"  # 8 threads
    assert cells[3] == ""  # no asyncio run
    assert cells[5] == "6,000"  # enqueue calls/s of the one-client pattern
    assert cells[6] == "0.100 / 0.100 / 0.100 = 0.300"


def test_cpu_per_job_is_judged_against_the_thriftiest_peer_of_either_mode() -> None:
    figures = {f["figure"]: f for f in summarize({"throughput": ROWS})}
    threads = figures["CPU ms per job, one client, threads (client + workers + redis)"]
    assert threads["best_peer"] == "huey thread"  # 0.7 ms against huey process's 1.0
    assert abs(threads["ratio"] - 0.3 / 0.7) < 0.001
    assert threads["met"] is True  # 0.43x <= 0.5x
    processes = figures["CPU ms per job, one client, processes (client + workers + redis)"]
    assert processes["met"] is False  # 0.4 / 0.7 = 0.57x


def test_the_command_prints_the_tables_of_a_results_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"meta": {"date": "d", "sandboxrunner_commit": "abc1234",
                                         "command": "python -m benchmarks"},
                                "throughput": ROWS}))
    out = subprocess.run([sys.executable, "-m", "benchmarks.markdown", str(path)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "commit abc1234" in out
    assert "| huey process | 1,800 (1,620-1,980) |" in out
    assert "| CPU ms per job, one client, threads" in out


def test_a_peer_acting_before_the_deadline_mark_is_not_the_best_peer() -> None:
    def timeout_row(system: str, failed_after_s: float) -> dict[str, Any]:
        runs = [{"kind": "sleep", "failed_after_s": failed_after_s, "pool_full_after_s": 0.01,
                 "next_ran_after_s": 0.01}]
        return {"system": system, "label": system, "status": "ok", "runs": runs}

    rows = [timeout_row("sandboxrunner", 0.009), timeout_row("rq", -0.02),
            timeout_row("huey", 0.006)]
    figures = {f["figure"]: f for f in summarize({"timeout": rows})}
    failed = figures["timeout, sleep job: failure recorded (worst run, s)"]
    # RQ's clock starts before the job does: its negative figure is no comparison
    assert failed["best_peer"] == "huey"
    assert failed["met"] is True
