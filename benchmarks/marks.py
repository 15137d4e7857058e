"""Time marks the timeout-probe jobs leave in Redis, read back by the harness.

Jobs of every system call `mark_start()` first thing (epoch seconds and pid) and the
stamp job calls `mark_stamp()`. The server is the benchmark's own, found through
``BENCH_REDIS_URL``, which the harness sets before it starts any worker.
"""

from __future__ import annotations

import json
import os
import time

import redis

URL_ENV = "BENCH_REDIS_URL"
START_KEY = "bench:mark:start"
STAMP_KEY = "bench:mark:stamp"
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ[URL_ENV])
    return _client


def mark_start() -> None:
    """Called by a timed-out job when it begins: when, and in which process."""
    now = time.time()
    _redis().set(START_KEY, json.dumps({"t": now, "pid": os.getpid()}))


def mark_stamp() -> float:
    """Called by the job queued behind it: when it ran."""
    now = time.time()
    _redis().set(STAMP_KEY, repr(now))
    return now


def reset() -> None:
    _redis().delete(START_KEY, STAMP_KEY)


def wait_start(timeout_s: float) -> tuple[float, int] | None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        raw = _redis().get(START_KEY)
        if raw is not None:
            mark = json.loads(raw)
            return float(mark["t"]), int(mark["pid"])
        time.sleep(0.001)
    return None


def read_stamp() -> float | None:
    raw = _redis().get(STAMP_KEY)
    return float(raw) if raw is not None else None


def forget_client() -> None:
    """Drop the connection (the server is flushed or replaced between systems)."""
    global _client
    if _client is not None:
        _client.close()
        _client = None


def sleep_job() -> None:
    mark_start()
    time.sleep(60)


def c_call_job() -> int:
    mark_start()
    # one C call: no bytecode runs, so signal handlers and async exceptions wait for it
    return sum(range(1_500_000_000))
