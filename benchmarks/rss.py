"""Memory of long-running processes over a run: `RssSampler` reads their RSS on a thread
every few seconds, and `rss_trend` turns one process's samples into first, last and max
and the least-squares slope, the figure that tells a flat RSS from a growing one.

The slope leaves out the first WARMUP_FRACTION of the samples' span: a supervisor's RSS
climbs while it starts its threads (each touches its stack) and claims its first jobs,
and that one-off climb is not growth. A fit over every sample, not first against last,
so one malloc arena's step up or down does not decide it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import psutil

from benchmarks.harness import tree_rss_bytes

RSS_INTERVAL_S = 1.0
WARMUP_FRACTION = 0.1
MIB = 2**20

Samples = list[tuple[float, int]]  # (seconds since the first sample, RSS bytes)


class RssSampler:
    """Samples each of PIDS every INTERVAL_S, from now until `stop`: its own RSS, its RSS
    with its descendants (a process-mode supervisor's children), and its thread count
    (``threads``: a thread pool that grows touches new stacks, and that is not a leak)."""

    def __init__(self, pids: Sequence[int], interval_s: float = RSS_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.samples: dict[int, tuple[Samples, Samples]] = {pid: ([], []) for pid in pids}
        self.threads: dict[int, list[int]] = {pid: [] for pid in pids}
        self._stopping = threading.Event()
        self._start = time.monotonic()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        at = time.monotonic() - self._start
        for pid, (own, tree) in self.samples.items():
            try:
                proc = psutil.Process(pid)
                own.append((at, proc.memory_info().rss))
                self.threads[pid].append(proc.num_threads())
            except psutil.Error:
                continue  # gone: its samples end here
            tree.append((at, tree_rss_bytes(pid)))

    def stop(self) -> dict[int, tuple[Samples, Samples]]:
        """Stop, take a last sample, and return pid -> (own samples, tree samples)."""
        self._stopping.set()
        self._thread.join()
        self._sample()
        return self.samples


def rss_trend(samples: Samples) -> dict[str, Any]:
    """First, last and max RSS (MiB) of SAMPLES, and the least-squares slope (MiB per
    minute) of those after the warm-up (module docstring), with the growth it fits over
    that part (slope times its span). Slope and growth are None under 3 such samples."""
    if not samples:
        return {"samples": 0, "first_mib": None, "last_mib": None, "max_mib": None,
                "slope_mib_per_min": None, "growth_mib": None}
    rss = [b / MIB for _, b in samples]
    span_s = samples[-1][0] - samples[0][0]
    settled = [(t, b / MIB) for t, b in samples if t - samples[0][0] >= WARMUP_FRACTION * span_s]
    slope = least_squares_slope(settled) if len(settled) >= 3 else None
    growth = slope * (settled[-1][0] - settled[0][0]) if slope is not None else None
    return {"samples": len(samples), "span_s": round(span_s, 1),
            "first_mib": round(rss[0], 1), "last_mib": round(rss[-1], 1),
            "max_mib": round(max(rss), 1),
            "slope_mib_per_min": round(slope * 60, 3) if slope is not None else None,
            "growth_mib": round(growth, 2) if growth is not None else None}


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float:
    """The slope (y per x) of the least-squares line through POINTS (at least 2, with at
    least two different x)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
