"""RQ: the forking ``Worker`` (a work horse forked per job) and ``SimpleWorker`` (jobs
run in the worker process), two worker processes each since RQ runs one job at a time
per worker.

The client enqueues with ``Queue.enqueue`` and waits with ``job.latest_result(timeout=)``,
which blocks on XREAD of the job's result stream (RQ >= 1.12; no polling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from rq import Queue

from benchmarks.harness import Latency
from benchmarks.patterns import collect_in_order
from benchmarks.peers import rq_app
from benchmarks.peers.base import PeerTimeouts, PeerVariant, in_slices, wait_ready
from benchmarks.variant import PROCESSES, Variant, payload, run_roundtrips

QUEUE = "bench"
WORKER_COUNT = 2


def _worker_argv(url: str, worker_class: str | None) -> list[str]:
    argv = ["rq", "worker", "--url", url, "--quiet"]
    if worker_class:
        argv += ["--worker-class", worker_class]
    return [*argv, QUEUE]


class _NoResult(Exception):
    pass


def _latest(job: Any, timeout_s: float) -> Any:
    """JOB's latest Result, waiting up to timeout_s (RQ blocks in whole seconds)."""
    def wait(slice_s: float) -> Any:
        result = job.latest_result(timeout=max(1, int(slice_s)))
        if result is None:
            raise _NoResult
        return result

    try:
        return in_slices(wait, timeout_s, (_NoResult,))
    except _NoResult:
        return None


def _result(job: Any, timeout_s: float) -> tuple[bool, Any]:
    """(seen, value) of JOB's latest result, waiting up to timeout_s."""
    result = _latest(job, timeout_s)
    if result is None:
        return False, None
    return True, result.return_value if result.type == result.Type.SUCCESSFUL else None


def _value(job: Any, timeout_s: float) -> Any:
    seen, value = _result(job, timeout_s)
    if not seen:
        raise TimeoutError("no result in time")
    return value


class RQVariant(PeerVariant):
    system = "rq"
    mode = PROCESSES
    wait_method = "job.latest_result(timeout=) on each (XREAD block)"
    roundtrip_method = "enqueue() + latest_result(timeout=)"

    def __init__(self, worker_class: str | None) -> None:
        super().__init__()
        self.worker_class = worker_class
        name = "SimpleWorker" if worker_class else "Worker"
        self.label = f"rq {name}"
        flag = f" --worker-class {worker_class}" if worker_class else ""
        self.workers = f"rq worker{flag} x {WORKER_COUNT} processes"

    def start(self, url: str, logdir: Path) -> None:
        self.conn = redis.Redis.from_url(url)
        self.queue = Queue(QUEUE, connection=self.conn)
        self.pool.start(_worker_argv(url, self.worker_class), url, logdir,
                        self.label.replace(" ", "-"), WORKER_COUNT)
        wait_ready(self.pool, lambda t: self._call(payload(0), t))

    def _call(self, data: Any, timeout_s: float) -> Any:
        seen, value = _result(self.queue.enqueue(rq_app.noop, data), timeout_s)
        if not seen:
            raise TimeoutError("no result")
        return value

    def stop(self) -> None:
        super().stop()
        if getattr(self, "conn", None) is not None:
            self.conn.close()

    def submit(self, i: int) -> Any:
        return self.queue.enqueue(rq_app.noop, payload(i))

    def collect(self, handles: list[tuple[int, Any]], deadline: float) -> tuple[int, int]:
        return collect_in_order(handles, deadline, _value)

    def roundtrip(self, calls: int, warmup: int, deadline: float) -> Latency:
        return run_roundtrips(lambda i: self._call(payload(i), 10), calls, warmup, deadline)


def variants() -> list[Variant]:
    return [RQVariant(None), RQVariant("rq.worker.SimpleWorker")]


class RQTimeouts(PeerTimeouts):
    system = "rq"
    label = "rq Worker"
    how = "one forking Worker; enqueue(job_timeout=1) (SIGALRM in the work horse)"

    def start(self, url: str, logdir: Path) -> None:
        self.conn = redis.Redis.from_url(url)
        self.queue = Queue(QUEUE, connection=self.conn)
        self.pool.start(_worker_argv(url, None), url, logdir, "rq-timeouts")
        wait_ready(self.pool, self._probe)

    def _probe(self, timeout_s: float) -> None:
        seen, _ = _result(self.queue.enqueue(rq_app.noop, payload(0)), timeout_s)
        if not seen:
            raise TimeoutError("no result")

    def stop(self) -> None:
        super().stop()
        if getattr(self, "conn", None) is not None:
            self.conn.close()

    def submit(self, kind: str) -> Any:
        func = rq_app.sleep_long if kind == "sleep" else rq_app.c_call
        return self.queue.enqueue(func, job_timeout=1)

    def wait_outcome(self, handle: Any, timeout_s: float) -> tuple[bool, str]:
        result = _latest(handle, timeout_s)
        if result is None:
            return False, "no answer"
        if result.type == result.Type.SUCCESSFUL:
            return False, "completed"
        text = (result.exc_string or "").strip().splitlines()
        return True, f"{result.type.name}: {text[-1] if text else ''}"[:160]

    def submit_stamp(self) -> None:
        self.queue.enqueue(rq_app.stamp)


def timeout_targets() -> list[PeerTimeouts]:
    return [RQTimeouts()]
