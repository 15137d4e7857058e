"""Delayed jobs under the benchmark: how late they start after their due time.

COUNT no-op jobs are enqueued with ``run_at`` due times spread evenly over SPREAD_S
seconds, starting LEAD_S after the first enqueue (so all of them wait in the delayed set
before the first is due), with a thread-mode supervisor running. Each job's lateness is
its record's ``start`` (the claim, server ms) minus its ``due`` (server ms): both from the
one server clock, so no host clock is compared with another. p50, p99 and max, and how
many started early (never, if correct).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from benchmarks.sandboxrunner_bench import Supervisor, make_client
from benchmarks.variant import payload

COUNT = 10_000
LEAD_S = 8.0
SPREAD_S = 10.0


def _percentile(values: list[int], q: float) -> int:
    return values[min(len(values) - 1, int(len(values) * q))]


def measure_delayed(url: str, logdir: Path, count: int = COUNT, lead_s: float = LEAD_S,
                    spread_s: float = SPREAD_S) -> dict[str, Any]:
    """Lateness (ms) of COUNT delayed no-ops spread over SPREAD_S (see the module doc)."""
    client = make_client(url)
    supervisor = Supervisor(url, logdir, processes=False, concurrency=None)
    try:
        first_due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead_s)
        step = dt.timedelta(seconds=spread_s / count)
        started = time.monotonic()
        ids = [client.enqueue("noop", payload(i), run_at=first_due + i * step).id
               for i in range(count)]
        enqueue_s = time.monotonic() - started
        delayed_at_first_due = client.store.redis.zcard(client.store.keys.delayed("default"))
        deadline = started + lead_s + spread_s + 30
        while _completed(client, ids) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        late = sorted(_lateness(client, ids))
    finally:
        supervisor.stop()
        client.close()
    return {"delayed": count, "spread_s": spread_s, "enqueue_s": round(enqueue_s, 2),
            "in_delayed_set_before_first_due": delayed_at_first_due,
            "ran": len(late), "early": sum(1 for ms in late if ms < 0),
            "late_p50_ms": _percentile(late, 0.5), "late_p99_ms": _percentile(late, 0.99),
            "late_max_ms": late[-1]}


def _completed(client: Any, ids: list[str]) -> int:
    raw = client.store.redis.hget(client.store.keys.stats("default"), "completed")
    return int(raw or 0)


def _lateness(client: Any, ids: list[str]) -> list[int]:
    """start - due (ms) of each job that ran, from its record."""
    late = []
    for i in range(0, len(ids), 5000):
        pipe = client.store.redis.pipeline(transaction=False)
        for job_id in ids[i:i + 5000]:
            pipe.hmget(client.store.keys.job(job_id), ["start", "due"])
        for start, due in pipe.execute():
            if start and due:
                late.append(int(start) - int(due))
    return late
