"""SAQ: asyncio workers; "threads" is ``--workers 1``, "processes" ``--workers 2``.

The client uses ``queue.map()`` for many jobs and ``queue.apply()`` for one. Both poll
the job records every ``poll_interval`` (0.5 s by default; SAQ's README shows passing a
shorter one): 10 ms for map, 1 ms for apply here. SAQ's pub/sub wait
(``job.refresh(until_complete=)``) is not used: it subscribes after reading the job, so a
job that finishes in between is only noticed at the timeout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from benchmarks.harness import Latency, left_s
from benchmarks.peers.base import PeerVariant, wait_ready
from benchmarks.variant import PROCESSES, THREADS, Variant, payload, run_roundtrips

SETTINGS = "benchmarks.peers.saq_app.settings"
APPLY_POLL_S = 0.001


class SaqVariant(PeerVariant):
    system = "saq"
    wait_method = "job.refresh(until_complete=) on each (pub/sub)"
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

    sync_client, async_client = False, True  # SAQ's client is asyncio only

    async def asubmit(self, i: int) -> Any:
        job = await self.queue.enqueue("noop", data=payload(i))
        if job is None:  # SAQ returns None for a job whose key exists already
            raise RuntimeError("saq refused the job")
        return job

    async def acollect(self, handles: list[tuple[int, Any]], deadline: float) -> tuple[int, int]:
        seen = wrong = 0
        for i, job in handles:
            try:  # 0 would mean "wait forever"
                await job.refresh(until_complete=max(0.001, left_s(deadline)))
            except Exception:  # noqa: BLE001 - TimeoutError: the budget is spent
                break
            if not job.completed:
                break
            seen += 1
            wrong += job.result != payload(i)
        return seen, wrong

    def run_async(self, coro: Any) -> Any:
        return self._run(coro)

    def roundtrip(self, calls: int, warmup: int, deadline: float) -> Latency:
        return run_roundtrips(
            lambda i: self._run(self.queue.apply("noop", timeout=10, poll_interval=APPLY_POLL_S,
                                                 data=payload(i))),
            calls, warmup, deadline)


def variants() -> list[Variant]:
    return [SaqVariant(1), SaqVariant(2)]


def timeout_targets() -> list[Any]:
    return []
