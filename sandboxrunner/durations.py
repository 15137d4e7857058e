"""Job durations per job name: the histogram finish.lua keeps, and its typed reading.

Each attempt a supervisor reports (completed, failed whether or not it is retried, or
cancelled while it ran) is one observation of its job name, measured by the Redis server's
clock from the claim that started the attempt (the record's ``start``) to the finish
script that records its outcome. So it is the run time plus the trip of the job to its
worker and of its outcome back; a job a process pool prefetched also counts the time it
waited in the supervisor for a free child (a few ms of backlog for short jobs, up to one
run of a child for long ones while every child is busy). Jobs settled without running
(cancelled or deleted while queued, failed for stalling) are not observed.

Redis layout (``keys.Keys.durations``): one HASH per queue,

  NAME:LE      observations of NAME longer than the bucket below and at most LE ms (LE one
               of BUCKETS_MS, or ``inf``): one field per bucket ever hit, not cumulative
  NAME:sum     the sum of NAME's observations, ms
  #names       how many names the hash holds; at NAMES_MAX a new name is not recorded,
               so a client enqueueing arbitrary names cannot grow it without bound

No TTL: it is a counter, as Prometheus counters are; at most NAMES_MAX x 18 fields. The
finish script adds one HINCRBY per distinct bucket hit and one for the sum per name per
batch (two for a lone job), plus two checks the first time a name hits a bucket. A name's
count is the sum of its buckets. finish.lua spells BUCKETS_MS and NAMES_MAX too; a test
checks that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Prometheus's default buckets (5 ms to 10 s), then longer ones for background jobs
BUCKETS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000,
                               30_000, 60_000, 300_000, 900_000, 3_600_000)
NAMES_MAX = 200  # job names per queue whose durations are kept
NAMES_FIELD = "#names"
SUM = "sum"
INF = "inf"


@dataclass(frozen=True)
class DurationHistogram:
    """The durations of one job name on one queue: CUMULATIVE[i] observations took at most
    BUCKETS_MS[i] ms (the last, ``inf``, is COUNT)."""

    queue: str
    job: str
    cumulative: tuple[int, ...]  # len(BUCKETS_MS) + 1: the last is every observation
    sum_ms: int

    @property
    def count(self) -> int:
        return self.cumulative[-1]


@dataclass(frozen=True)
class Durations:
    """Every histogram of some queues, in queue then job name order."""

    histograms: tuple[DurationHistogram, ...]
    bounds_ms: tuple[int, ...] = BUCKETS_MS

    def of(self, queue: str, job: str) -> DurationHistogram | None:
        return next((h for h in self.histograms if h.queue == queue and h.job == job), None)


def _whole(raw: Any) -> int:
    try:
        return int(raw.decode() if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError):
        return 0  # a field written by hand


def histograms_of(queue: str, fields: dict[str, Any]) -> list[DurationHistogram]:
    """QUEUE's histograms from its durations hash (FIELDS: field -> raw value); fields
    that are none of ours are left out."""
    slots = {str(bound): i for i, bound in enumerate(BUCKETS_MS)} | {INF: len(BUCKETS_MS)}
    counts: dict[str, list[int]] = {}
    sums: dict[str, int] = {}
    for field, raw in fields.items():
        name, sep, suffix = field.rpartition(":")
        if not sep or not name:
            continue
        if suffix == SUM:
            sums[name] = _whole(raw)
        elif suffix in slots:
            counts.setdefault(name, [0] * len(slots))[slots[suffix]] = _whole(raw)
    out = []
    for name in sorted(counts):
        running, cumulative = 0, []
        for n in counts[name]:
            running += n
            cumulative.append(running)
        out.append(DurationHistogram(queue, name, tuple(cumulative), sums.get(name, 0)))
    return out
