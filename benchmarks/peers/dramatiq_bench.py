"""Dramatiq: RedisBroker and the Results middleware (Redis backend). A Dramatiq worker is
processes x threads; "processes" runs 2 x 8 and "threads" 1 x 8 (8 is its default).

The client sends with ``actor.send`` and waits with ``message.get_result(block=True)``,
which blocks on BRPOPLPUSH of the message's result key.
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

APP = "benchmarks.peers.dramatiq_app"
THREAD_COUNT = 8


def _worker_argv(processes: int, threads: int) -> list[str]:
    return ["dramatiq", APP, "--processes", str(processes), "--threads", str(threads)]


def _get(message: Any, timeout_s: float) -> Any:
    from dramatiq.results import ResultTimeout

    return in_slices(lambda t: message.get_result(block=True, timeout=max(1, int(t * 1000))),
                     timeout_s, (ResultTimeout,))


class DramatiqVariant(PeerVariant):
    system = "dramatiq"
    wait_method = "message.get_result(block=True) on each (BRPOPLPUSH)"
    roundtrip_method = "send().get_result(block=True)"

    def __init__(self, processes: int) -> None:
        super().__init__()
        self.processes = processes
        self.mode = PROCESSES if processes > 1 else THREADS
        self.label = f"dramatiq {self.mode}"
        self.workers = f"dramatiq --processes {processes} --threads {THREAD_COUNT}"

    def start(self, url: str, logdir: Path) -> None:
        from benchmarks.peers import dramatiq_app

        self.app = dramatiq_app
        self.pool.start(_worker_argv(self.processes, THREAD_COUNT), url, logdir,
                        f"dramatiq-{self.mode}")
        wait_ready(self.pool, lambda t: _get(dramatiq_app.noop.send(payload(0)), t))

    def submit(self, i: int) -> Any:
        return self.app.noop.send(payload(i))

    def collect(self, handles: list[tuple[int, Any]], deadline: float) -> tuple[int, int]:
        return collect_in_order(handles, deadline, _get)

    def roundtrip(self, calls: int, warmup: int, deadline: float) -> Latency:
        return run_roundtrips(lambda i: _get(self.app.noop.send(payload(i)), 10),
                              calls, warmup, deadline)


def variants() -> list[Variant]:
    return [DramatiqVariant(2), DramatiqVariant(1)]


class DramatiqTimeouts(PeerTimeouts):
    system = "dramatiq"
    label = "dramatiq processes"
    how = ("dramatiq --processes 1 --threads 1; actor time_limit=1000 "
           "(TimeLimit middleware: async exception in the worker thread)")

    def start(self, url: str, logdir: Path) -> None:
        from benchmarks.peers import dramatiq_app

        self.app = dramatiq_app
        self.pool.start(_worker_argv(1, 1), url, logdir, "dramatiq-timeouts")
        wait_ready(self.pool, lambda t: _get(dramatiq_app.noop.send(payload(0)), t))

    def submit(self, kind: str) -> Any:
        return (self.app.sleep_long if kind == "sleep" else self.app.c_call).send()

    def wait_outcome(self, handle: Any, timeout_s: float) -> tuple[bool, str]:
        from dramatiq.results import ResultTimeout

        return outcome_of(lambda: _get(handle, timeout_s), ResultTimeout)

    def submit_stamp(self) -> None:
        self.app.stamp.send()


def timeout_targets() -> list[PeerTimeouts]:
    return [DramatiqTimeouts()]
