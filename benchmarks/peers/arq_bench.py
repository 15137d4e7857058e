"""arq: asyncio workers; "threads" is one worker process, "processes" two.

arq waits for a result by polling (``job.result(poll_delay=)``, default 0.5 s); the
client here polls every 5 ms, the shortest interval that does not flood Redis. Its
worker also polls its queue every ``poll_delay`` (0.5 s by default), which bounds both
its round trip and its throughput.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from benchmarks.harness import Latency, left_s
from benchmarks.peers.base import PeerVariant, wait_ready
from benchmarks.variant import PROCESSES, THREADS, Variant, payload, run_roundtrips

SETTINGS = "benchmarks.peers.arq_app.WorkerSettings"
CLIENT_POLL_S = 0.005


class ArqVariant(PeerVariant):
    system = "arq"
    wait_method = f"job.result(poll_delay={CLIENT_POLL_S}) on each"
    roundtrip_method = f"enqueue_job() + job.result(poll_delay={CLIENT_POLL_S})"

    def __init__(self, processes: int) -> None:
        super().__init__()
        self.processes = processes
        self.mode = PROCESSES if processes > 1 else THREADS
        self.label = f"arq {self.mode}"
        self.workers = f"arq WorkerSettings (max_jobs 10) x {processes} process(es)"

    def start(self, url: str, logdir: Path) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        self.loop: asyncio.AbstractEventLoop | None = asyncio.new_event_loop()
        self.redis = self.loop.run_until_complete(create_pool(RedisSettings.from_dsn(url)))
        self.pool.start(["arq", SETTINGS], url, logdir, f"arq-{self.mode}", self.processes)
        wait_ready(self.pool, lambda t: self._run(self._call(payload(0), t)))

    def stop(self) -> None:
        super().stop()
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.run_until_complete(self.redis.aclose())
            loop.close()
            self.loop = None

    def _run(self, coro: Any) -> Any:
        assert self.loop is not None, "start() first"
        return self.loop.run_until_complete(coro)

    async def _enqueue(self, data: Any) -> Any:
        job = await self.redis.enqueue_job("noop", data)
        if job is None:  # arq returns None when a job with that id already exists
            raise RuntimeError("arq refused the job")
        return job

    async def _call(self, data: Any, timeout_s: float) -> Any:
        job = await self._enqueue(data)
        return await job.result(timeout=timeout_s, poll_delay=CLIENT_POLL_S)

    sync_client, async_client = False, True  # arq's client is asyncio only

    async def asubmit(self, i: int) -> Any:
        return await self._enqueue(payload(i))

    async def acollect(self, handles: list[tuple[int, Any]], deadline: float) -> tuple[int, int]:
        seen = wrong = 0
        for i, job in handles:
            try:
                value = await job.result(timeout=left_s(deadline), poll_delay=CLIENT_POLL_S)
            except Exception:  # noqa: BLE001 - TimeoutError: the budget is spent
                break
            seen += 1
            wrong += value != payload(i)
        return seen, wrong

    def run_async(self, coro: Any) -> Any:
        return self._run(coro)

    def roundtrip(self, calls: int, warmup: int, deadline: float) -> Latency:
        return run_roundtrips(lambda i: self._run(self._call(payload(i), 10)),
                              calls, warmup, deadline)


def variants() -> list[Variant]:
    return [ArqVariant(1), ArqVariant(2)]


def timeout_targets() -> list[Any]:
    return []
