"""A slow Redis: a stalled server and a slow network must not make live leases lapse.

DEBUG SLEEP blocks the whole server for 2.5 s, two and a half leases, while two
supervisors run jobs that go on through the stall: no heartbeat lands meanwhile, yet no
supervisor may be declared dead (heartbeat.lua). Through a proxy adding latency to every
packet, a supervisor keeps its lease while its job traffic crawls: heartbeats have their
own connection and thread, so slow job traffic never delays them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis

from sandboxrunner.testserver import TestServer
from tests.faults.common import Proxy, job_lines, leftovers, starts, stats, wait_for
from tests.supervisors import client_for, running_supervisor


def test_a_stalled_server_does_not_make_live_leases_lapse(
        debug_server: TestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sandboxrunner")
    url = debug_server.url
    runs = tmp_path / "runs"
    runs.mkdir()
    with running_supervisor(url, workers="default", concurrency=2), \
            running_supervisor(url, workers="default", concurrency=2), \
            client_for(url) as client, redis.Redis.from_url(url) as r:
        handles = [client.enqueue("fault_work", {"dir": str(runs), "seconds": 3})
                   for _ in range(4)]
        wait_for(lambda: len(job_lines(runs)) == 4, what="four jobs to start")
        time.sleep(0.3)  # every supervisor has heartbeated since
        started = time.monotonic()
        r.execute_command("DEBUG", "SLEEP", "2.5")
        assert time.monotonic() - started >= 2.4
        results = [h.result(wait_timeout=20_000) for h in handles]
        counters = stats(r)
        assert set(leftovers(r).values()) == {0}
    assert all(len(starts(job)) == 1 for job in job_lines(runs).values())
    assert [x["attempt"] for x in results] == [1, 1, 1, 1]
    assert counters["stalled"] == 0 and counters["completed"] == 4
    assert "stopped heartbeating" not in caplog.text


def test_a_supervisor_on_a_slow_network_keeps_its_lease(
        redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sandboxrunner")
    runs = tmp_path / "runs"
    runs.mkdir()
    port = int(redis_url.rsplit(":", 1)[1])
    with Proxy(port, delay_s=0.05) as slow:  # 100 ms more per round trip, each way 50
        slow_url = f"redis://127.0.0.1:{slow.port}"
        with running_supervisor(slow_url, workers="default", concurrency=4) as far, \
                client_for(redis_url) as client, redis.Redis.from_url(redis_url) as r:
            handles = [client.enqueue("fault_work", {"dir": str(runs), "seconds": 2})
                       for _ in range(4)]
            wait_for(lambda: len(job_lines(runs)) == 4, what="the far supervisor's jobs")
            # a supervisor next to Redis judges the far one's lease all along
            with running_supervisor(redis_url, workers="default", concurrency=1):
                results = [h.result(wait_timeout=20_000) for h in handles]
            counters = stats(r)
            far_sid = far.sid
        assert slow.accepted >= 3  # fetch, blocking read, heartbeat at least
    assert {x["attempt"] for x in results} == {1}
    assert all(len(starts(job)) == 1 for job in job_lines(runs).values())
    assert counters["stalled"] == 0
    assert f"supervisor {far_sid} stopped heartbeating" not in caplog.text
