"""What the peers' variants share: worker processes started from one command line,
ready once a no-op has made a round trip."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import marks
from benchmarks.harness import Unavailable, WorkerProcess
from benchmarks.variant import TimeoutTarget, Variant

READY_TIMEOUT_S = 40.0
# redis-py 8 gives every connection a 5 s socket timeout, so a blocking read (BLPOP,
# XREAD BLOCK, BRPOPLPUSH) longer than that fails; longer waits are made of slices
BLOCK_SLICE_S = 4.0
T = TypeVar("T")


def in_slices(wait: Callable[[float], T], timeout_s: float,
              not_yet: tuple[type[BaseException], ...]) -> T:
    """Call wait(slice_s) until it returns, for at most timeout_s in all; a wait that
    raises one of NOT_YET is retried, and the last of those is raised when time is up."""
    end = time.monotonic() + timeout_s
    while True:
        left = end - time.monotonic()
        try:
            return wait(max(0.001, min(BLOCK_SLICE_S, left)))
        except not_yet:
            if time.monotonic() >= end:
                raise


class Workers:
    """COUNT copies of one worker command, each in its own process group."""

    def __init__(self) -> None:
        self.procs: list[WorkerProcess] = []

    def start(self, argv: list[str], url: str, logdir: Path, name: str, count: int = 1) -> None:
        for i in range(count):
            self.procs.append(WorkerProcess(argv, logdir / f"{name}-{i}.log",
                                            env={marks.URL_ENV: url}))

    def check_alive(self) -> None:
        for proc in self.procs:
            if not proc.alive():
                raise Unavailable(f"worker exited early:\n{proc.tail()}")

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs = []

    @property
    def first_pid(self) -> int:
        return self.procs[0].pid


def wait_ready(workers: Workers, probe: Callable[[float], Any]) -> None:
    """Retry PROBE (one round trip given a timeout in s) until it works or time is up."""
    end = time.monotonic() + READY_TIMEOUT_S
    error: Exception | None = None
    while time.monotonic() < end:
        workers.check_alive()
        try:
            probe(5.0)
            return
        except Exception as exc:  # noqa: BLE001 - not ready yet; retried until the end
            error = exc
            time.sleep(0.2)
    tails = "\n".join(p.tail() for p in workers.procs)
    raise Unavailable(f"workers not ready in {READY_TIMEOUT_S:g} s ({error!r}):\n{tails}")


class PeerVariant(Variant):
    """A Variant whose workers are WORKER_COUNT copies of one command."""

    def __init__(self) -> None:
        self.pool = Workers()

    def stop(self) -> None:
        self.pool.stop()

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.pool.procs]


class PeerTimeouts(TimeoutTarget):
    def __init__(self) -> None:
        self.pool = Workers()

    def stop(self) -> None:
        self.pool.stop()

    def root_pid(self) -> int:
        return self.pool.first_pid


def outcome_of(get: Callable[[], Any], no_answer: type[BaseException]) -> tuple[bool, str]:
    """What a timeout job's result wait saw: (stopped, how). NO_ANSWER is the peer's "not
    within the wait" exception; any other exception is the peer reporting the job failed."""
    try:
        get()
    except no_answer:
        return False, "no answer"
    except Exception as exc:  # noqa: BLE001 - the peer's "job failed" exception
        return True, f"{type(exc).__name__}: {exc}"[:160]
    return False, "completed"
