"""SAQ: asyncio workers; "threads" is ``--workers 1``, "processes" ``--workers 2``.

The client uses ``queue.map()`` for many jobs and ``queue.apply()`` for one. Both poll
the job records every ``poll_interval`` (0.5 s by default; SAQ's README shows passing a
shorter one): 10 ms for map, 1 ms for apply here. SAQ's pub/sub wait
(``job.refresh(until_complete=)``) is not used: it subscribes after reading the job, so a
job that finishes in between is only noticed at the timeout.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Latency, Throughput, left_s
from benchmarks.peers.base import PeerVariant, wait_ready
from benchmarks.variant import PROCESSES, THREADS, Variant, payload, run_roundtrips

SETTINGS = "benchmarks.peers.saq_app.settings"
MAP_POLL_S = 0.01
APPLY_POLL_S = 0.001


class SaqVariant(PeerVariant):
    system = "saq"
    wait_method = f"queue.map() over N jobs, poll_interval={MAP_POLL_S}"
    roundtrip_method = f"queue.apply(poll_interval={APPLY_POLL_S})"

    def __init__(self, processes: int) -> None:
        super().__init__()
        self.processes = processes
        self.mode = PROCESSES if processes > 1 else THREADS
        self.label = f"saq {self.mode}"
        self.workers = f"saq settings --workers {processes} (concurrency 10)"

    def start(self, url: str, logdir: Path) -> None:
        from saq import Queue

        self.loop: asyncio.AbstractEventLoop | None = asyncio.new_event_loop()

        async def connect() -> Any:
            queue = Queue.from_url(url, name="bench")
            await queue.connect()
            return queue

        self.queue = self.loop.run_until_complete(connect())
        self.pool.start(["saq", SETTINGS, "--workers", str(self.processes), "--quiet"], url,
                        logdir, f"saq-{self.mode}")
        wait_ready(self.pool, lambda t: self._run(
            self.queue.apply("noop", timeout=t, poll_interval=APPLY_POLL_S, data=payload(0))))

    def stop(self) -> None:
        super().stop()
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.run_until_complete(self.queue.disconnect())
            loop.close()
            self.loop = None

    def _run(self, coro: Any) -> Any:
        assert self.loop is not None, "start() first"
        return self.loop.run_until_complete(coro)

    def throughput(self, n: int, deadline: float) -> Throughput:
        start = time.perf_counter()
        try:
            values = self._run(self.queue.map(
                "noop", [{"data": payload(i)} for i in range(n)], timeout=left_s(deadline),
                poll_interval=MAP_POLL_S))
        except Exception:  # noqa: BLE001 - timed out: map() gives no partial results
            return Throughput(n, 0, time.perf_counter() - start)
        elapsed = time.perf_counter() - start
        wrong = sum(1 for i, v in enumerate(values) if v != payload(i))
        return Throughput(n, len(values), elapsed, wrong)

    def roundtrip(self, calls: int, warmup: int, deadline: float) -> Latency:
        return run_roundtrips(
            lambda i: self._run(self.queue.apply("noop", timeout=10, poll_interval=APPLY_POLL_S,
                                                 data=payload(i))),
            calls, warmup, deadline)


def variants() -> list[Variant]:
    return [SaqVariant(1), SaqVariant(2)]


def timeout_targets() -> list[Any]:
    return []
