"""Load: 100,000 queued jobs, two supervisor services, every job run exactly once.

The services are paused (SIGSTOP) while the jobs are queued, so they face a real backlog,
and are resumed after more than a lease of silence. Each job appends its id to a file of
the process that ran it, so the test counts the runs of every job across both services.
Redis memory (INFO used_memory) must come back close to where it was once the results
expired (result_ttl 2 s here; histories and log streams are capped), and the services'
RSS must stay flat between 20% and 100% of the load. SANDBOXRUNNER_FAULT_LOAD_JOBS lowers
the count for a quick local run.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time
import uuid
from pathlib import Path

import psutil
import redis

from sandboxrunner.fetching import CLAIM_BATCH_MAX
from sandboxrunner.job import PreparedJob
from sandboxrunner.store import SCRIPT_SHAS, SCRIPT_SOURCES, Store, enqueue_keys
from tests.faults.common import K, leftovers, stats, wait_for
from tests.supervisors import SupervisorProcess, make_config

JOBS = int(os.environ.get("SANDBOXRUNNER_FAULT_LOAD_JOBS", "100000"))
ENQUEUE_BATCH = 2000
RESULT_TTL_MS = 2000
MIB = 1024 * 1024


def _enqueue_all(redis_url: str, tally: Path) -> list[str]:
    store = Store(make_config(redis_url), redis_url)
    ids = [f"default-{uuid.uuid4().hex}" for _ in range(JOBS)]
    try:
        store.redis.script_load(SCRIPT_SOURCES["enqueue"])
        for start in range(0, JOBS, ENQUEUE_BATCH):
            pipe = store.redis.pipeline(transaction=False)
            for n, job_id in enumerate(ids[start:start + ENQUEUE_BATCH], start):
                data = json.dumps({"dir": str(tally), "n": n})
                job = PreparedJob("default", job_id, "fault_tally", data, 30_000)
                keys = enqueue_keys(K, job)
                pipe.evalsha(SCRIPT_SHAS["enqueue"], len(keys), *keys,
                             K.queue_prefix("default"), "", 1000, *job.script_args())
            pipe.execute()
    finally:
        store.close()
    return ids


def _rss(sups: list[SupervisorProcess]) -> list[int]:
    return [psutil.Process(s.proc.pid).memory_info().rss for s in sups]


def test_a_hundred_thousand_jobs_run_exactly_once_and_memory_returns_to_its_level(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    tally = tmp_path / "tally"
    tally.mkdir()
    env = {"WORKERS": "default", "SANDBOXRUNNER_RESULT_TTL": str(RESULT_TTL_MS)}
    sups = [SupervisorProcess(redis_url, **env), SupervisorProcess(redis_url, **env)]
    try:
        for sup in sups:
            sup.wait_ready()
        time.sleep(0.5)  # both have claimed (scripts loaded) and published a snapshot
        memory_before = redis_client.info("memory")["used_memory"]
        # a real backlog: the services are paused (SIGSTOP) while every job is queued,
        # longer than their lease; resumed, neither may take the other for dead
        for sup in sups:
            sup.signal(signal.SIGSTOP)
        started = time.monotonic()
        ids = _enqueue_all(redis_url, tally)
        enqueued_s = time.monotonic() - started
        memory_queued = redis_client.info("memory")["used_memory"]
        # all queued but what each paused service's pending BLMOVE took: the one job it
        # moved and the batch the claim pipelined behind it took along
        assert redis_client.llen(K.wait("default")) >= JOBS - len(sups) * CLAIM_BATCH_MAX
        started = time.monotonic()
        for sup in sups:
            sup.signal(signal.SIGCONT)
        wait_for(lambda: stats(redis_client)["completed"] >= JOBS // 5, timeout_s=120,
                 what="a fifth of the jobs")
        rss_fifth = _rss(sups)
        wait_for(lambda: stats(redis_client)["completed"] >= JOBS, timeout_s=240,
                 what="every job")
        done_s = time.monotonic() - started
        rss_all = _rss(sups)
        memory_peak = redis_client.info("memory")["used_memory"]
        counters = stats(redis_client)
        left = leftovers(redis_client)
        # every result expires; what stays is bounded (counters, capped histories); the
        # listing's index of completed jobs goes result_ttl after its newest entry, about
        # when the last records go, and is waited for by name (it holds them all)
        wait_for(lambda: redis_client.dbsize() < 50
                 and not redis_client.exists(K.done("default", "completed")),
                 timeout_s=60, what="results to expire")
        # an expired big key may be freed on a background thread (lazyfree-lazy-expire)
        settle_by = time.monotonic() + 10
        while True:
            memory_after = redis_client.info("memory")["used_memory"]
            if memory_after - memory_before < 2 * MIB or time.monotonic() > settle_by:
                break
            time.sleep(0.2)
        for sup in sups:
            sup.signal(signal.SIGTERM)
        assert [sup.wait() for sup in sups] == [0, 0]
    finally:
        for sup in sups:
            sup.stop()
    runs = collections.Counter(
        line for path in tally.iterdir() for line in path.read_text().splitlines())
    print(f"\n{JOBS} jobs: enqueued in {enqueued_s:.1f} s, run in {done_s:.1f} s; "
          f"Redis used_memory {memory_before / MIB:.1f} MiB before, "
          f"{memory_queued / MIB:.1f} with all queued, {memory_peak / MIB:.1f} when all "
          f"ran, {memory_after / MIB:.1f} after expiry; "
          f"supervisor RSS at 20% {[r // MIB for r in rss_fifth]} MiB, "
          f"at 100% {[r // MIB for r in rss_all]} MiB; runs per file "
          f"{[len(p.read_text().splitlines()) for p in tally.iterdir()]}")
    assert counters["completed"] == JOBS == counters["enqueued"]
    assert counters["failed"] == counters["stalled"] == counters["retried"] == 0
    assert set(left.values()) == {0}
    assert len(runs) == JOBS and set(runs.values()) == {1} and set(runs) == set(ids)
    assert len(list(tally.iterdir())) == 2  # both services took a share
    assert memory_after - memory_before < 2 * MIB
    for fifth, full in zip(rss_fifth, rss_all, strict=True):
        assert full < fifth * 1.3 + 30 * MIB
