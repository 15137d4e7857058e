"""A Redis with a memory limit: eviction is warned about, a full Redis loses nothing.

With an evicting `maxmemory-policy` (anything but noeviction) Redis may drop a queued job's
record or a whole wait list when memory runs short: a supervisor says so loudly at start,
and `top` shows the policy. With noeviction a full Redis refuses writes instead: a caller
gets `RedisFull` (the CLI exits 4, one line) with nothing of its call written, the jobs
queued before still run (the scripts that drain a queue may use memory past the limit:
`allow-oom`), and once their results expire new calls go through again.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest
import redis

from sandboxrunner import RedisFull
from sandboxrunner.keys import Keys
from sandboxrunner.testserver import TestServer
from tests.clirun import one_error_line, run_cli
from tests.supervisors import (
    ROOT,
    SupervisorProcess,
    client_for,
    running_supervisor,
    wait_for,
)

K = Keys("sr")
# room left above the empty server's memory: jobs fill it, and it must hold a
# supervisor's connections (a few hundred KiB) once their results expired
ROOM_BYTES = 2 * 2**20
DATA = {"blob": "x" * 2000}  # async_echo returns it, and logs nothing


@pytest.fixture
def server(tmp_path: Path) -> TestServer:
    with TestServer(tmp_path / "redis") as started:
        yield started


def _limit(url: str, policy: str, room_bytes: int = ROOM_BYTES) -> None:
    with redis.Redis.from_url(url) as r:
        r.config_set("maxmemory-policy", policy)
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) + room_bytes)


def _started_output(url: str) -> str:
    sup = SupervisorProcess(url, ["--workers", "default"])
    try:
        sup.wait_ready()
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
        return sup.output()
    finally:
        sup.stop()


def test_a_supervisor_warns_loudly_when_redis_may_evict_its_keys(server: TestServer) -> None:
    _limit(server.url, "allkeys-lru")
    output = _started_output(server.url)
    warning = [x for x in output.splitlines() if "maxmemory-policy" in x]
    assert len(warning) == 1 and "WARNING" in warning[0], output
    assert "allkeys-lru" in warning[0] and "noeviction" in warning[0], warning[0]
    _limit(server.url, "noeviction")
    assert "maxmemory-policy" not in _started_output(server.url)


def test_top_shows_the_maxmemory_policy(server: TestServer, tmp_path: Path) -> None:
    _limit(server.url, "volatile-lru")
    env = {"REDIS_URL": server.url}
    shown = run_cli(["top", "--json"], tmp_path, **env)
    assert shown.returncode == 0, shown.stderr
    memory = json.loads(shown.stdout)["redis"]
    assert memory["maxmemory_policy"] == "volatile-lru"
    assert memory["maxmemory_bytes"] > memory["used_memory_bytes"] > 0
    text = run_cli(["top", "--once", "--width", "160"], tmp_path, **env)
    header = text.stdout.splitlines()[0]
    assert "volatile-lru" in header and "may evict" in header, text.stdout
    _limit(server.url, "noeviction")
    text = run_cli(["top", "--once", "--width", "160"], tmp_path, **env)
    assert "noeviction" in text.stdout.splitlines()[0], text.stdout


def _job_records(r: redis.Redis) -> int:
    return sum(1 for _ in r.scan_iter(match=K.job("default-*")))


def test_a_full_redis_refuses_new_jobs_clearly_and_loses_no_queued_job(
        server: TestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sandboxrunner")
    url = server.url
    _limit(url, "noeviction")
    with client_for(url) as client, redis.Redis.from_url(url) as r:
        handles = []
        with pytest.raises(RedisFull) as full:
            while len(handles) < 5_000:
                handles.append(client.enqueue("async_echo", DATA))
        assert len(handles) > 20
        assert "is full" in str(full.value) and "\n" not in str(full.value)
        # nothing half-written: a record, a wait list entry and a count per job acknowledged
        assert _job_records(r) == len(handles) == r.llen(K.wait("default"))
        assert int(r.hget(K.stats("default"), "enqueued")) == len(handles)
        ran = run_cli(["run", "echo", "1"], ROOT, REDIS_URL=url,
                      SANDBOXRUNNER_JOBS_DIR=str(ROOT / "tests" / "jobs"))
        assert ran.returncode == 4 and "is full" in one_error_line(ran), ran.stderr
        # a supervisor starts on the full Redis and drains it: no queued job is lost
        with running_supervisor(url, workers="default", result_ttl=1000):
            results = [h.result(wait_timeout=30_000) for h in handles]
            assert all(x["async_echo"] == DATA for x in results)
            # once the results expire there is room again
            wait_for(lambda: _job_records(r) == 0, timeout_s=15, what="results to expire")
            assert client.run_job("async_echo", DATA, wait_timeout=10_000) == {
                "async_echo": DATA}
    # a full Redis is no outage: the fetch says so once, and once when it has room again
    assert "fetching jobs: Redis failed" not in caplog.text
    assert caplog.text.count("Redis is full (maxmemory): queue default") == 1
    assert caplog.text.count("Redis has room again: queue default") == 1
