"""Redis restarted under load, Redis gone at start-up, replies lost with a connection.

The restart test stops a persisting server (SHUTDOWN with the AOF) for three seconds,
three times the lease, while a thread-mode and a process-mode supervisor run jobs and
callers wait, and while two more callers (run_job and arun_job) enqueue during the
outage. Nothing may crash or be lost, and, since no supervisor died, no job may run
twice: the heartbeat script must not take the silence of every supervisor for their
death (see heartbeat.lua).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sandboxrunner import client as client_mod
from sandboxrunner.client import Client
from sandboxrunner.errors import RedisUnavailable
from sandboxrunner.job import PreparedJob
from sandboxrunner.store import Store, check_reachable
from sandboxrunner.testserver import TestServer
from tests.deployments import raw_client
from tests.faults.common import K, job_lines, leftovers, starts, stats, wait_for
from tests.supervisors import SupervisorProcess, client_for, make_config, running_supervisor

OUTAGE_S = 3.0


def test_supervisors_and_callers_ride_out_a_redis_restart_and_no_job_runs_twice(
        fresh_server: TestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sandboxrunner")
    url = fresh_server.url
    runs = tmp_path / "runs"
    runs.mkdir()
    work = {"dir": str(runs), "seconds": 1.5}
    with running_supervisor(url, workers="default", concurrency=3) as threads_sup, \
            running_supervisor(url, workers="default", concurrency=2,
                               use_separate_process=True) as procs_sup, \
            client_for(url) as client, \
            concurrent.futures.ThreadPoolExecutor(10) as callers:
        waiting = [callers.submit(client.run_job, "fault_work", work, wait_timeout=40_000)
                   for _ in range(8)]
        wait_for(lambda: len(job_lines(runs)) >= 4, what="jobs to start")
        fresh_server.stop()  # SHUTDOWN: the AOF keeps every queued and running job
        during = [callers.submit(client.run_job, "fault_work", work, wait_timeout=40_000),
                  callers.submit(asyncio.run, _arun(client, work))]
        time.sleep(OUTAGE_S)
        fresh_server.restart()  # same port, same data
        results = [w.result(timeout=40) for w in waiting + during]
        # both supervisors still serve: every thread survived the outage
        assert client.run_job("echo", 1, wait_timeout=10_000)["echo"] == 1
        assert all(t.is_alive() for s in (threads_sup, procs_sup) for t in s._threads)
    lines = job_lines(runs)
    assert sorted(r["job"] for r in results) == sorted(lines)
    for job_id, job in lines.items():
        assert len(starts(job)) == 1 and job[-1].word == "end", (job_id, job)
    assert all(r["attempt"] == 1 for r in results)
    with redis.Redis.from_url(url) as r:
        counters = stats(r)
        assert set(leftovers(r).values()) == {0}
    assert counters["completed"] == 11 and counters["stalled"] == 0
    assert "stopped heartbeating" not in caplog.text
    # the outage was real: jobs finished during it, and their outcomes waited for Redis;
    # each supervisor said so once per kind of thread, not once per retry, and said when
    # Redis was back
    assert "writing job outcomes: Redis failed" in caplog.text
    for kind in ("fetching jobs", "heartbeat"):
        assert caplog.text.count(f"{kind}: Redis failed") == 2, caplog.text
        assert caplog.text.count(f"{kind}: Redis is back") == 2, caplog.text


async def _arun(client: Client, work: dict[str, Any]) -> Any:
    try:
        return await client.arun_job("fault_work", work, wait_timeout=40_000)
    finally:
        await client.aclose()


def test_a_claim_whose_reply_was_lost_is_claimed_again_once_redis_is_back(
        fresh_server: TestServer, tmp_path: Path) -> None:
    url = fresh_server.url
    runs = tmp_path / "runs"
    runs.mkdir()
    job_id = "default-" + "7" * 32
    with running_supervisor(url, workers="default") as sup, client_for(url) as client, \
            redis.Redis.from_url(url) as r:
        # what a claim leaves behind when its reply is lost: the job is active in the
        # supervisor's lease, but the supervisor never got it
        r.hset(K.job(job_id), mapping={
            "name": "fault_work", "data": f'{{"dir": "{runs}"}}', "timeout": 5000,
            "status": "active", "sid": sup.sid, "attempt": 1, "stalled": 0, "enq": 1,
            "reply": "", "skey": "", "retries": 0, "backoff": ""})
        r.lpush(K.active("default", sup.sid), job_id)
        fresh_server.restart(down_s=0.3)  # a connection error in the fetch loop
        result = client.get_result(job_id, wait_timeout=10_000)
    assert result["attempt"] == 1  # handed over again, not counted as a new attempt
    assert len(starts(job_lines(runs)[job_id])) == 1


def test_a_job_in_a_live_lease_that_never_reached_its_supervisor_is_claimed_again(
        redis_url: str, tmp_path: Path) -> None:
    # what a failover's window can leave, with no error for the supervisor to see: a job
    # claimed on the new master whose outcome went to the old one (acknowledged there,
    # then thrown away) sits in the lease of a supervisor that no longer holds it
    runs = tmp_path / "runs"
    runs.mkdir()
    job_id = "default-" + "9" * 32
    with running_supervisor(redis_url, workers="default") as sup, \
            client_for(redis_url) as client, raw_client(redis_url) as r:
        r.hset(K.job(job_id), mapping={
            "name": "fault_work", "data": f'{{"dir": "{runs}"}}', "timeout": 5000,
            "status": "active", "sid": sup.sid, "attempt": 1, "stalled": 0, "enq": 1,
            "reply": "", "skey": "", "retries": 0, "backoff": ""})
        r.lpush(K.active("default", sup.sid), job_id)
        result = client.get_result(job_id, wait_timeout=10_000)
    assert result["attempt"] == 1  # handed over again, not counted as a new attempt
    assert len(starts(job_lines(runs)[job_id])) == 1


def test_an_enqueue_retried_after_its_reply_was_lost_does_not_queue_the_job_twice(
        redis_url: str, redis_client: redis.Redis) -> None:
    store = Store(make_config(redis_url), redis_url)
    job_id = "default-" + "8" * 32
    try:
        job = PreparedJob("default", job_id, "echo", "1", 1000)
        first = store.enqueue(job, reply_cid="c1")
        again = store.enqueue(job, reply_cid="c2")
    finally:
        store.close()
    assert (first.attached, again.attached, again.job_id) == (False, True, job_id)
    assert redis_client.lrange(K.wait("default"), 0, -1) == [job_id.encode()]
    assert redis_client.hget(K.job(job_id), "reply").split() == [b"c1", b"c2"]
    assert stats(redis_client)["enqueued"] == 1


def test_after_a_silence_of_every_supervisor_none_is_declared_dead_for_one_lease(
        redis_url: str) -> None:
    store = Store(make_config(redis_url, lease_ms=400, heartbeat_ms=100), redis_url)
    try:
        store.heartbeat("default", "a")
        store.heartbeat("default", "b")
        time.sleep(0.6)  # Redis unreachable for everybody, longer than the lease
        assert store.heartbeat("default", "a") == []  # b may be reconnecting: not dead
        assert store.heartbeat("default", "newcomer") == []
        store.heartbeat("default", "b")
        b_beat = time.monotonic()
        dead: list[str] = []
        while not dead and time.monotonic() < b_beat + 3:  # b stops for good now
            time.sleep(0.05)
            store.heartbeat("default", "newcomer")
            dead = store.heartbeat("default", "a")
        assert dead == ["b"]
        assert time.monotonic() - b_beat >= 0.35  # judged only once its own lease lapsed
    finally:
        store.close()


def test_start_waits_for_redis_with_a_one_line_message_per_try_and_no_password(
        tmp_path: Path) -> None:
    server = TestServer(tmp_path / "redis", options={"requirepass": "s3cret-pw"})
    server.start()
    server.stop()  # its port is now known and closed
    server._fixed_port = True
    sup = SupervisorProcess(server.url)
    lines: list[str] = []  # its output as it comes: a slow start under load is no failure
    reader = threading.Thread(target=_read_lines, args=(sup, lines), daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(_retry_lines(lines)) >= 2, timeout_s=30,
                 what="two lines saying start retries")
        assert sup.proc.poll() is None
        server.start()
        sup.wait_ready()
        with client_for(server.url) as client:
            assert client.run_job("echo", 1, wait_timeout=10_000)["echo"] == 1
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
        reader.join(timeout=10)
    finally:
        sup.stop()
        server.stop()
    waiting = _retry_lines(lines)
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{server.port}" in waiting[0]
    assert all(".;" not in line and ". ;" not in line for line in waiting), waiting[0]
    output = "".join(lines)
    assert "Traceback" not in output and "s3cret-pw" not in output


def _read_lines(sup: SupervisorProcess, lines: list[str]) -> None:
    assert sup.proc.stdout is not None
    for line in sup.proc.stdout:
        lines.append(line)


def _retry_lines(lines: list[str]) -> list[str]:
    return [line for line in list(lines) if "retrying in" in line]


def test_start_with_no_wait_for_redis_exits_4_at_once(tmp_path: Path) -> None:
    server = TestServer(tmp_path / "redis")
    server.start()
    server.stop()
    sup = SupervisorProcess(server.url, ["--no-wait-for-redis"])
    try:
        assert sup.wait(timeout_s=20) == 4
        assert "cannot reach Redis" in sup.output()
    finally:
        sup.stop()


PASSWORD = "s3cret-pw"


@pytest.fixture
def stopped_server(tmp_path: Path) -> Iterator[TestServer]:
    """A server with a password, started and stopped: its port is known and closed."""
    server = TestServer(tmp_path / "gone-redis", options={"requirepass": PASSWORD})
    server.start()
    server.stop()
    yield server


def _in_loop(client: Client, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    async def main() -> Any:
        try:
            return await make()
        finally:
            await client.aclose()

    return asyncio.run(main())


UNKNOWN_ID = "default-" + "1" * 32
CALLER_PATHS: dict[str, Callable[[Client], Any]] = {
    "run_job": lambda c: c.run_job("echo", 1),
    "enqueue": lambda c: c.enqueue("echo", 1),
    "get_result": lambda c: c.get_result(UNKNOWN_ID),
    "arun_job": lambda c: _in_loop(c, lambda: c.arun_job("echo", 1)),
    "aget_result": lambda c: _in_loop(c, lambda: c.aget_result(UNKNOWN_ID)),
}


@pytest.mark.parametrize("path", CALLER_PATHS)
def test_every_caller_path_retries_a_stopped_redis_then_raises_redis_unavailable(
        path: str, stopped_server: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_mod, "ENQUEUE_RETRY_S", 1.0)
    with client_for(stopped_server.url) as client:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable) as info:
            CALLER_PATHS[path](client)
        elapsed_s = time.monotonic() - started
    assert 1.0 <= elapsed_s < 3.0  # retried up to the limit: neither at once nor for long
    message = str(info.value)
    assert f"redis://:***@127.0.0.1:{stopped_server.port}" in message, message
    assert "tried for 1 s" in message and PASSWORD not in message
    assert "\n" not in message and ".;" not in message and ".:" not in message, message


def test_callers_wait_while_a_restarted_server_loads_its_data(
        fresh_server: TestServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sandboxrunner")
    url = fresh_server.url
    with running_supervisor(url), client_for(url) as client:
        done_id = client.enqueue("echo", "before").id
        assert client.get_result(done_id, wait_timeout=5000)["echo"] == "before"
        with redis.Redis.from_url(url) as r, r.pipeline(transaction=False) as pipe:
            for i in range(20_000):  # AOF commands: while loading, Redis serves its
                pipe.set(f"filler:{i}", "x")  # clients once every 1024 of them
            pipe.execute()
        fresh_server.stop()
        # us per command loaded: 2 s or more, past redis-py's own retries (~0.5 s)
        fresh_server.options["key-load-delay"] = "100"
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            restarting = pool.submit(fresh_server.restart)
            wait_for(lambda: _loading(url), what="the server to be seen loading")
            calls = {
                "check_reachable": pool.submit(check_reachable, url),
                "get_result": pool.submit(client.get_result, done_id, 10_000),
                "run_job": pool.submit(client.run_job, "echo", "during", None, 10_000),
                "arun_job": pool.submit(asyncio.run, _arun_echo(client)),
            }
            results = {name: call.result(timeout=30) for name, call in calls.items()}
            restarting.result(timeout=30)
    assert results["check_reachable"] is None
    assert results["get_result"]["echo"] == "before"
    assert results["run_job"]["echo"] == "during" and results["arun_job"]["echo"] == "async"
    assert "still loading its data" in caplog.text  # the loading was seen, and waited for


def _loading(url: str) -> bool:
    """Whether the server at URL answers INFO and says it is loading its data."""
    with redis.Redis.from_url(url, retry=None, socket_timeout=5) as client:
        try:
            return bool(client.info("persistence")["loading"])
        except (redis.RedisError, OSError):
            return False


async def _arun_echo(client: Client) -> Any:
    try:
        return await client.arun_job("echo", "async", wait_timeout=10_000)
    finally:
        await client.aclose()
