"""Client patterns: every system driven the same way.

The throughput section drives each variant through the same client patterns, so that a
ratio compares the systems and not the way each was called:

  one client   one thread: N synchronous enqueues, then the results of all N
  8 threads    8 threads at once, each N/8 synchronous enqueues, then its own results
  asyncio      one event loop, 8 tasks at once, each N/8 awaited enqueues, then its own
               results (the systems with an asyncio client: sandboxrunner, arq, SAQ)

A variant says how it enqueues one no-op (`Variant.submit`, `Variant.asubmit`: one call of
its public enqueue API, one job) and how it waits for the results of many
(`Variant.collect`, `Variant.acollect`: its own best way, such as Celery's
``ResultSet.join_native`` or a handle's ``result()``). A variant without a synchronous
client (arq, SAQ) has no row in the first two patterns, and one without an asyncio client
none in the third.

A run reports jobs/s (first enqueue to last result seen) and enqueue calls/s (the calls
over the time the enqueueing took: for 8 threads or tasks, N over the longest one's). A
pattern runs `--repeat` times; the table shows the median and the spread, never the best.

sandboxrunner's own pipelined client (64 ``arun_job`` calls in flight on one loop, which
batches their writes) is a row of its own, labelled as ours: no peer is driven that way.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.harness import left_s
from benchmarks.variant import Variant

ONE_CLIENT, THREADS_8, ASYNCIO = "one client", "8 threads", "asyncio"
PATTERNS = (ONE_CLIENT, THREADS_8, ASYNCIO)
CLIENTS = 8  # threads or tasks of the concurrent patterns


@dataclass
class PatternRun:
    """One run of a pattern: N jobs, how many results were seen and right, and times."""

    n: int
    seen: int
    wrong: int
    elapsed_s: float  # first enqueue to last result
    enqueue_s: float  # the enqueueing (the longest client's, with several)

    @property
    def jobs_per_s(self) -> float:
        return self.seen / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def enqueues_per_s(self) -> float:
        return self.n / self.enqueue_s if self.enqueue_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.seen == self.n and self.wrong == 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "jobs_per_s": round(self.jobs_per_s, 1),
                "enqueues_per_s": round(self.enqueues_per_s, 1), "complete": self.complete}


def supports(variant: Variant, pattern: str) -> bool:
    return variant.async_client if pattern == ASYNCIO else variant.sync_client


def run_pattern(variant: Variant, pattern: str, n: int, deadline: float) -> PatternRun:
    """One run of PATTERN on VARIANT (started), N jobs, within DEADLINE (monotonic)."""
    if pattern == ONE_CLIENT:
        return _threads(variant, n, 1, deadline)
    if pattern == THREADS_8:
        return _threads(variant, n, CLIENTS, deadline)
    return variant.run_async(_tasks(variant, n, CLIENTS, deadline))


def _shares(n: int, clients: int) -> list[range]:
    """The job numbers of each client: N split as evenly as it goes (fewer clients than
    CLIENTS when N is small)."""
    step = max(1, -(-n // clients))
    return [range(i, min(i + step, n)) for i in range(0, n, step)]


def _threads(variant: Variant, n: int, clients: int, deadline: float) -> PatternRun:
    outcomes: list[tuple[int, int, float]] = []
    lock = threading.Lock()
    shares = _shares(n, clients)
    go = threading.Barrier(len(shares) + 1)  # they start enqueueing together

    def client(share: range) -> None:
        go.wait()
        started = time.perf_counter()
        handles = [(i, variant.submit(i)) for i in share if time.monotonic() < deadline]
        enqueued = time.perf_counter() - started
        seen, wrong = variant.collect(handles, deadline)
        with lock:
            outcomes.append((seen, wrong, enqueued))

    threads = [threading.Thread(target=client, args=(share,), daemon=True) for share in shares]
    for thread in threads:
        thread.start()
    go.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join(left_s(deadline) + 5)
    return _run(n, outcomes, time.perf_counter() - start)


async def _tasks(variant: Variant, n: int, clients: int, deadline: float) -> PatternRun:
    async def client(share: range) -> tuple[int, int, float]:
        started = time.perf_counter()
        handles = []
        for i in share:
            if time.monotonic() >= deadline:
                break
            handles.append((i, await variant.asubmit(i)))
        enqueued = time.perf_counter() - started
        seen, wrong = await variant.acollect(handles, deadline)
        return seen, wrong, enqueued

    start = time.perf_counter()
    outcomes = await asyncio.gather(*(client(share) for share in _shares(n, clients)))
    return _run(n, list(outcomes), time.perf_counter() - start)


def _run(n: int, outcomes: list[tuple[int, int, float]], elapsed_s: float) -> PatternRun:
    return PatternRun(n, sum(o[0] for o in outcomes), sum(o[1] for o in outcomes), elapsed_s,
                      max((o[2] for o in outcomes), default=0.0))


def summary(runs: list[PatternRun]) -> dict[str, Any]:
    """The median of RUNS and their spread, per figure."""
    out: dict[str, Any] = {"complete": all(r.complete for r in runs)}
    for key, figure in (("jobs_per_s", lambda r: r.jobs_per_s),
                        ("enqueues_per_s", lambda r: r.enqueues_per_s)):
        values = [figure(r) for r in runs]
        out[key] = round(statistics.median(values), 1)
        out[f"{key}_min"], out[f"{key}_max"] = round(min(values), 1), round(max(values), 1)
    return out


def collect_in_order(handles: list[tuple[int, Any]], deadline: float,
                     get: Callable[[Any, float], Any]) -> tuple[int, int]:
    """Results seen and wrong ones, waiting on each handle in turn with GET(handle,
    seconds left); stops at the first that does not come in time."""
    from benchmarks.variant import payload

    seen = wrong = 0
    for i, handle in handles:
        try:
            value = get(handle, left_s(deadline))
        except Exception:  # noqa: BLE001 - the peer's "not in time": the budget is spent
            break
        seen += 1
        wrong += value != payload(i)
    return seen, wrong
