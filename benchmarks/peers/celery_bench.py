"""Celery: prefork and threads pools, Redis broker and Redis result backend.

The client sends with ``apply_async`` and waits with ``ResultSet.join_native()``, which
for the Redis backend waits on pub/sub for every task's result channel (Celery's
documented fast path for many results); a round trip is ``delay().get()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness import Latency, left_s, python_argv
from benchmarks.peers.base import PeerTimeouts, PeerVariant, wait_ready
from benchmarks.variant import PROCESSES, THREADS, Variant, payload, run_roundtrips

APP = "benchmarks.peers.celery_app"
THREAD_COUNT = 8


def _worker_argv(pool: str, concurrency: int) -> list[str]:
    return python_argv("-m", "celery", "-A", APP, "worker", "--pool", pool,
                       "--concurrency", str(concurrency), "--loglevel", "WARNING")


class CeleryVariant(PeerVariant):
    system = "celery"
    wait_method = "ResultSet.join_native() (Redis pub/sub)"
    roundtrip_method = "delay().get()"

    def __init__(self, pool: str, concurrency: int) -> None:
        super().__init__()
        self.pool_name = pool
        self.concurrency = concurrency
        self.mode = PROCESSES if pool == "prefork" else THREADS
        self.label = f"celery {pool}"
        self.workers = f"celery worker --pool {pool} --concurrency {concurrency}"

    def start(self, url: str, logdir: Path) -> None:
        from benchmarks.peers import celery_app

        self.app = celery_app
        self.pool.start(_worker_argv(self.pool_name, self.concurrency), url, logdir,
                        f"celery-{self.pool_name}")
        wait_ready(self.pool, lambda t: celery_app.noop.delay(payload(0)).get(timeout=t))

    def submit(self, i: int) -> Any:
        return self.app.noop.apply_async((payload(i),))

    def collect(self, handles: list[tuple[int, Any]], deadline: float) -> tuple[int, int]:
        from celery.exceptions import TimeoutError as CeleryTimeout
        from celery.result import ResultSet

        results = ResultSet([handle for _, handle in handles])
        try:
            values = results.join_native(timeout=left_s(deadline), propagate=False)
        except CeleryTimeout:
            return sum(1 for r in results.results if r.ready()), 0
        return len(values), sum(1 for (i, _), v in zip(handles, values, strict=True)
                                if v != payload(i))

    def roundtrip(self, calls: int, warmup: int, deadline: float) -> Latency:
        return run_roundtrips(lambda i: self.app.noop.delay(payload(i)).get(timeout=10),
                              calls, warmup, deadline)


def variants() -> list[Variant]:
    return [CeleryVariant("prefork", 2), CeleryVariant("threads", THREAD_COUNT)]


class CeleryTimeouts(PeerTimeouts):
    system = "celery"
    label = "celery prefork"
    how = "--pool prefork --concurrency 1; task time_limit=1 (hard limit: child killed)"

    def start(self, url: str, logdir: Path) -> None:
        from benchmarks.peers import celery_app

        self.app = celery_app
        self.pool.start(_worker_argv("prefork", 1), url, logdir, "celery-timeouts")
        wait_ready(self.pool, lambda t: celery_app.noop.delay(payload(0)).get(timeout=t))

    def submit(self, kind: str) -> Any:
        task = self.app.sleep_long if kind == "sleep" else self.app.c_call
        return task.delay()

    def wait_outcome(self, handle: Any, timeout_s: float) -> tuple[bool, str]:
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            handle.get(timeout=timeout_s)
        except CeleryTimeout:
            return False, "no answer"
        except Exception as exc:  # noqa: BLE001 - the task's failure, re-raised by get()
            return True, f"{type(exc).__name__}: {exc}"[:160]
        return False, "completed"

    def submit_stamp(self) -> None:
        self.app.stamp.delay()


def timeout_targets() -> list[PeerTimeouts]:
    return [CeleryTimeouts()]
