"""The scale benchmark's RSS trend (benchmarks/rss.py), sampled from real processes: one
that keeps allocating and one that sleeps. The 1,000,000-job drain itself is a benchmark
(`python -m benchmarks --only scale --scale-1m`), far too slow for the suite."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from benchmarks.rss import RssSampler, least_squares_slope, rss_trend

# 4 MiB more every 50 ms, touched so it is resident; "ready" once it has started
GROWING = """
import sys, time
kept = []
print("ready", flush=True)
while True:
    kept.append(bytearray(b"x" * (4 << 20)))
    time.sleep(0.05)
"""
SLEEPING = 'import time\nprint("ready", flush=True)\ntime.sleep(60)'


@pytest.fixture
def spawn() -> Iterator[Callable[[str], int]]:
    procs: list[subprocess.Popen[str]] = []

    def start(code: str) -> int:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def sample(pid: int, seconds: float) -> list[tuple[float, int]]:
    sampler = RssSampler([pid], interval_s=0.05)
    time.sleep(seconds)
    own, tree = sampler.stop()[pid]
    assert len(own) == len(tree) >= 10
    return own


def test_a_process_that_keeps_allocating_has_a_growing_trend(spawn: Callable[[str], int]) -> None:
    trend = rss_trend(sample(spawn(GROWING), 1.0))
    # 80 MiB a second allocated; the fit after the warm-up sees most of it
    assert trend["slope_mib_per_min"] > 20 * 60
    assert trend["growth_mib"] > 20
    assert trend["last_mib"] > trend["first_mib"] + 20
    assert trend["max_mib"] >= trend["last_mib"]


def test_a_sleeping_process_has_a_flat_trend(spawn: Callable[[str], int]) -> None:
    trend = rss_trend(sample(spawn(SLEEPING), 1.0))
    assert abs(trend["growth_mib"]) < 0.5
    assert trend["first_mib"] > 1


def test_a_trend_of_too_few_samples_has_no_slope() -> None:
    trend = rss_trend([(0.0, 50 << 20), (0.04, 51 << 20)])
    assert trend["slope_mib_per_min"] is None and trend["growth_mib"] is None
    assert (trend["first_mib"], trend["last_mib"], trend["max_mib"]) == (50.0, 51.0, 51.0)
    assert rss_trend([])["samples"] == 0


def test_the_least_squares_slope_of_points_on_a_line_is_its_slope() -> None:
    assert least_squares_slope([(0, 1.0), (1, 3.0), (2, 5.0), (4, 9.0)]) == pytest.approx(2.0)
    assert least_squares_slope([(0, 2.0), (1, 1.0), (2, 3.0), (3, 2.0)]) == pytest.approx(0.2)
