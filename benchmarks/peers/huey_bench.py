"""Huey: RedisHuey consumers with process and thread workers.

The client calls the task (which enqueues) and waits with
``result.get(blocking=True, timeout=)``; with ``notify_result=True`` that is a BLPOP on
a per-task notification key (Huey >= 3.0's low-latency result fetching).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness import Latency
from benchmarks.patterns import collect_in_order
from benchmarks.peers.base import (
    PeerTimeouts,
    PeerVariant,
    in_slices,
    outcome_of,
    wait_ready,
)
from benchmarks.variant import PROCESSES, THREADS, Variant, payload, run_roundtrips

HUEY = "benchmarks.peers.huey_app.huey"
THREAD_COUNT = 8


def _get(result: Any, timeout_s: float) -> Any:
    from huey.exceptions import ResultTimeout

    return in_slices(lambda t: result.get(blocking=True, timeout=t), timeout_s, (ResultTimeout,))


def _consumer_argv(kind: str, workers: int) -> list[str]:
    return ["huey_consumer", HUEY, "-k", kind, "-w", str(workers), "-q"]


class HueyVariant(PeerVariant):
    system = "huey"
    wait_method = "result.get(blocking=True) on each (notify_result BLPOP)"
    roundtrip_method = "task()(...).get(blocking=True)"

    def __init__(self, kind: str, workers: int) -> None:
        super().__init__()
        self.kind = kind
        self.count = workers
        self.mode = PROCESSES if kind == "process" else THREADS
        self.label = f"huey {kind}"
        self.workers = f"huey_consumer -k {kind} -w {workers}"

    def start(self, url: str, logdir: Path) -> None:
        from benchmarks.peers import huey_app

        self.app = huey_app
        self.pool.start(_consumer_argv(self.kind, self.count), url, logdir, f"huey-{self.kind}")
        wait_ready(self.pool, lambda t: _get(huey_app.noop(payload(0)), t))

    def submit(self, i: int) -> Any:
        return self.app.noop(payload(i))

    def collect(self, handles: list[tuple[int, Any]], deadline: float) -> tuple[int, int]:
        return collect_in_order(handles, deadline, _get)

    def roundtrip(self, calls: int, warmup: int, deadline: float) -> Latency:
        return run_roundtrips(
            lambda i: _get(self.app.noop(payload(i)), 10), calls, warmup, deadline)


def variants() -> list[Variant]:
    return [HueyVariant("process", 2), HueyVariant("thread", THREAD_COUNT)]


class HueyTimeouts(PeerTimeouts):
    system = "huey"
    label = "huey process"
    how = "huey_consumer -k process -w 1; @task(timeout=1) (SIGALRM raises in the task)"

    def start(self, url: str, logdir: Path) -> None:
        from benchmarks.peers import huey_app

        self.app = huey_app
        self.pool.start(_consumer_argv("process", 1), url, logdir, "huey-timeouts")
        wait_ready(self.pool, lambda t: _get(huey_app.noop(payload(0)), t))

    def submit(self, kind: str) -> Any:
        return (self.app.sleep_long if kind == "sleep" else self.app.c_call)()

    def wait_outcome(self, handle: Any, timeout_s: float) -> tuple[bool, str]:
        from huey.exceptions import ResultTimeout

        return outcome_of(lambda: _get(handle, timeout_s), ResultTimeout)

    def submit_stamp(self) -> None:
        self.app.stamp()


def timeout_targets() -> list[PeerTimeouts]:
    return [HueyTimeouts()]
