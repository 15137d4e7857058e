"""What a dashboard page load costs Redis with 100,000 jobs waiting: counted by the
server itself (INFO commandstats, before and after each load), and bounded whatever the
backlog: the same count as with 60 jobs waiting (enough to fill a queue page)."""

from __future__ import annotations

import time
from typing import Any

from sandboxrunner.dashboard import asgi_app
from sandboxrunner.keys import Keys
from sandboxrunner.store import SCRIPT_SHAS, enqueue_keys
from tests.deployments import raw_client
from tests.supervisors import client_for, make_config
from tests.webservers import Http, serve_asgi

BACKLOG = 100_000
# commands per load, whatever the backlog (README "Web dashboard" states them)
BOUNDS = {"overview": 40, "queue page": 100, "job page": 6, "short id": 20, "metrics": 45}


def _seed_waiting(redis_url: str, count: int) -> list[str]:
    """COUNT jobs waiting in queue default, enqueued by the real enqueue script,
    pipelined 10,000 at a time (enqueue() one by one would take a while)."""
    keys, ids = Keys(), []
    with client_for(redis_url) as client, raw_client(redis_url) as r:
        ids.append(client.enqueue("echo", {"n": -1}).id)  # the script is loaded now
        config = client.config
        for start in range(0, count - 1, 10_000):
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(count - 1, start + 10_000)):
                job = client.prepare("echo", {"n": i}, None)
                declared = enqueue_keys(keys, job)
                pipe.evalsha(SCRIPT_SHAS["enqueue"], len(declared), *declared,
                             keys.queue_prefix(job.queue), "", config.lease_ms,
                             *job.script_args(), *job.schedule_args())
                ids.append(job.job_id)
            pipe.execute()
    return ids


def _commands(r: Any) -> int:
    return sum(stat["calls"] for stat in r.info("commandstats").values())


def _costs(redis_url: str, job_id: str) -> dict[str, int]:
    """Commands each page load sent (one fresh snapshot read each: refresh_s is short)."""
    app = asgi_app(config=make_config(redis_url), refresh_s=0.05)
    pages = {"overview": "/", "queue page": "/queues/default?status=queued",
             "job page": f"/jobs/{job_id}", "short id": f"/lookup?id={job_id[8:16]}",
             "metrics": "/metrics"}
    costs = {}
    with serve_asgi(app) as base, raw_client(redis_url) as r:
        http = Http(base)
        http.get("/")  # connections made and scripts known: every load below is alike
        for name, path in pages.items():
            time.sleep(0.1)  # the shared snapshot is stale: this load reads one
            before = _commands(r)
            assert http.get(path).status in (200, 303)
            costs[name] = _commands(r) - before - 1  # less the INFO that counted
    app.state.source.close()
    return costs


def test_a_page_load_costs_a_bounded_number_of_redis_calls_with_100000_jobs_waiting(
        redis_url: str) -> None:
    few = _costs(redis_url, _seed_waiting(redis_url, 60)[-5])  # a full queue page (50)
    with raw_client(redis_url) as r:
        r.flushall()
    ids = _seed_waiting(redis_url, BACKLOG)
    with raw_client(redis_url) as r:
        assert r.llen(Keys().wait("default")) == BACKLOG
    many = _costs(redis_url, ids[-5])  # near the head: the short id is found there
    print(f"\ncommands per page load, {BACKLOG} waiting: {many}; 60 waiting: {few}")
    assert many == few
    for name, bound in BOUNDS.items():
        assert many[name] <= bound, (name, many[name])
