"""Thread mode's pool grows by stalls, not by claims (executors/threads.py): a job no idle
thread can take waits for the next thread to free up (a thread counts as free once its
handler returned, while it writes the outcome), so a flood or a deep backlog of short jobs
runs on a few threads (each thread costs the supervisor its stack: RSS stays flat), while
jobs that block still get a thread each."""

from __future__ import annotations

import json
import time
from typing import Any

from sandboxrunner.executors.threads import ThreadExecutor
from sandboxrunner.job import ClaimedJob, Settlement
from sandboxrunner.registry import load_registry
from tests.supervisors import TEST_JOBS, client_for, running_supervisor

WRITE_S = 0.002  # what writing one outcome to Redis costs a thread, about


class _Sink:
    def emit(self, job_id: str, queue: str, line: dict[str, Any]) -> None:
        pass


def _job(i: int, name: str, data: Any) -> ClaimedJob:
    now = int(time.time() * 1000)
    return ClaimedJob(f"default-{i:032x}", name, json.dumps(data), 10_000, 1, now, now)


def _executor(concurrency: int, settled: list[Settlement]) -> ThreadExecutor:
    def report(outcome: Settlement) -> None:
        time.sleep(WRITE_S)  # the reporting thread writes the outcome itself
        settled.append(outcome)

    return ThreadExecutor("default", load_registry(TEST_JOBS), concurrency, report, _Sink())


def test_a_flood_of_short_jobs_keeps_the_pool_small() -> None:
    settled: list[Settlement] = []
    executor = _executor(50, settled)
    try:
        for i in range(1500):  # a job as soon as one is done, at most two in hand
            while executor.jobs_in_hand() >= 2:
                time.sleep(0.0001)
            executor.submit(_job(i, "echo", {"n": i}))
        deadline = time.monotonic() + 10
        while len(settled) < 1500 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(settled) == 1500
        threads = executor.snapshot()["threads"]
        assert threads <= 4, f"{threads} threads for two jobs at a time"
    finally:
        executor.shutdown(1000)


def test_jobs_that_block_still_run_side_by_side() -> None:
    settled: list[Settlement] = []
    executor = _executor(8, settled)
    try:
        started = time.monotonic()
        for i in range(8):
            executor.submit(_job(i, "slow", {"seconds": 0.3}))
        deadline = time.monotonic() + 5
        while len(settled) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(settled) == 8 and time.monotonic() - started < 1.5  # not 8 x 0.3 s
        assert executor.snapshot()["threads"] == 8
    finally:
        executor.shutdown(1000)


def _drain(redis_url: str, name: str, items: list[Any], concurrency: int) -> tuple[int, float]:
    """Enqueue ITEMS as one batch, then drain them with a thread-mode supervisor of
    CONCURRENCY: the pool's thread count once done, and the seconds the drain took."""
    with client_for(redis_url) as client:
        handles = client.enqueue_many(name, items)
        with running_supervisor(redis_url, concurrency=concurrency) as supervisor:
            started = time.monotonic()
            for handle in handles:
                handle.result(wait_timeout=30_000)
            took = time.monotonic() - started
            return supervisor.executors["default"].snapshot()["threads"], took


def test_a_backlog_of_short_jobs_drains_on_a_small_pool(redis_url: str) -> None:
    # every claim used to take up to 200 jobs at once and start a thread for each one no
    # thread was free to take: a deep queue of no-ops grew the pool to ~200 threads
    threads, _ = _drain(redis_url, "echo", [{"n": i} for i in range(3000)], concurrency=300)
    assert threads <= 40, f"{threads} threads to drain no-ops"


def test_a_backlog_of_jobs_that_block_still_gets_a_thread_each(redis_url: str) -> None:
    threads, took = _drain(redis_url, "slow", [{"seconds": 0.5}] * 100, concurrency=100)
    assert took < 2.0, f"100 jobs of 0.5 s on 100 threads took {took:.1f} s"
    assert threads >= 90  # a fetch thread may run one itself
