"""Pausing a queue: every supervisor stops claiming it within one fetch (running jobs
finish, enqueues are still accepted), the state lives in Redis and outlives supervisors,
and resuming it runs what waited; from Python (sync and asyncio) and the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import redis

from sandboxrunner import apause, aresume, pause, resume
from sandboxrunner.errors import UnknownQueue
from sandboxrunner.job import claimed_batch
from sandboxrunner.keys import Keys
from sandboxrunner.snapshot import SnapshotReader
from sandboxrunner.store import Store
from tests.clirun import one_error_line, project_with, run_cli
from tests.deployments import every_deployment
from tests.supervisors import MODES, client_for, make_config, running_supervisor, wait_for

KEYS = Keys()


def _status(redis_client: redis.Redis, job_id: str) -> str:
    return (redis_client.hget(KEYS.job(job_id), "status") or b"").decode()


@every_deployment
@pytest.mark.parametrize("mode", MODES)
def test_a_paused_queue_is_not_claimed_while_running_jobs_finish_and_resume_runs_it(
        redis_url: str, redis_client: redis.Redis, mode: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        running = client.enqueue("slow", {"seconds": 0.5})
        wait_for(lambda: _status(redis_client, running.id) == "active", what="a running job")
        assert pause("default") is True
        assert pause("default") is False  # already paused: no change
        held = [client.enqueue("echo", n) for n in range(3)]  # still accepted
        assert running.result(wait_timeout=10_000) == {"slept": 0.5, "tag": None}
        time.sleep(0.8)  # several fetches' worth: none claims
        assert [_status(redis_client, h.id) for h in held] == ["queued"] * 3
        assert redis_client.llen(KEYS.wait("default")) == 3
        assert client.run_job("urgent", 1, wait_timeout=5000)["urgent"] == 1  # not paused
        assert resume("default") is True
        assert resume("default") is False
        assert [h.result(wait_timeout=5000)["echo"] for h in held] == [0, 1, 2]
    assert _status(redis_client, running.id) == "completed"


def test_a_pause_outlives_the_supervisors_and_asyncio_pauses_too(
        redis_url: str, redis_client: redis.Redis) -> None:
    with client_for(redis_url) as client:
        async def pause_it() -> bool:
            try:
                return await apause("default")
            finally:
                await client.aclose()

        assert asyncio.run(pause_it()) is True
        assert redis_client.ttl(KEYS.paused("default")) == -1  # no expiry
        handle = client.enqueue("echo", 1)
        with running_supervisor(redis_url):
            time.sleep(0.5)
        with running_supervisor(redis_url):  # a restarted supervisor keeps off it too
            time.sleep(0.5)
            assert _status(redis_client, handle.id) == "queued"

            async def resume_it() -> bool:
                try:
                    return await aresume("default")
                finally:
                    await client.aclose()

            assert asyncio.run(resume_it()) is True
            assert handle.result(wait_timeout=5000)["echo"] == 1


def test_a_pause_between_a_blocking_move_and_its_claim_puts_the_job_back_first(
        redis_url: str, redis_client: redis.Redis) -> None:
    # BLMOVE and the claim script are two commands: a pause may land between them. The
    # job the BLMOVE moved must go back to the head of the queue (its turn kept), unrun.
    store = Store(make_config(redis_url), redis_url)
    with client_for(redis_url) as client:
        first, second = client.enqueue("echo", 1), client.enqueue("echo", 2)
        moved = redis_client.blmove(KEYS.wait("default"), KEYS.active("default", "sup-a"),
                                    1, "RIGHT", "LEFT")  # a real BLMOVE, on its own connection
        assert moved.decode() == first.id
        pause("default")
        # the claim pipelined behind that BLMOVE (HEAD = 1: take the lease's head)
        jobs, next_ms = claimed_batch(store._run(
            "claim", store._claim_keys("default", "sup-a"),
            [KEYS.queue_prefix("default"), "sup-a", 4, "1", ""]))
        assert jobs == [] and next_ms == Store.PAUSED
        assert redis_client.llen(KEYS.active("default", "sup-a")) == 0
        assert [i.decode() for i in redis_client.lrange(KEYS.wait("default"), 0, -1)] == [
            second.id, first.id]  # the right end is the head: first still goes first
        # never claimed: no attempt counted (an absent field reads as 0, job.py)
        assert int(redis_client.hget(KEYS.job(first.id), "attempt") or 0) == 0
        assert store.claim("default", "sup-a", 5) == ([], Store.PAUSED)
        resume("default")
        jobs, _ = store.claim("default", "sup-a", 1)
        assert [j.id for j in jobs] == [first.id] and jobs[0].attempt == 1
    store.close()


def test_pausing_an_unknown_queue_is_refused(redis_url: str, redis_client: redis.Redis) -> None:
    with client_for(redis_url):
        with pytest.raises(UnknownQueue, match="no queue 'nope'.*default, priority"):
            pause("nope")
        with pytest.raises(UnknownQueue):
            resume("")
    assert redis_client.keys("*paused*") == []


def test_top_shows_a_paused_queue(redis_url: str) -> None:
    with client_for(redis_url):
        pause("priority")
    reader = SnapshotReader(make_config(redis_url), redis_url)
    queues = {q.name: q for q in reader.read().queues}
    reader.close()
    assert queues["priority"].paused and not queues["default"].paused


def test_the_cli_pauses_and_resumes_a_queue(redis_url: str, redis_client: redis.Redis,
                                            tmp_path: Path) -> None:
    project = project_with(tmp_path, {"hello": "def run(data):\n    return data\n"})
    env = {"REDIS_URL": redis_url}
    paused = run_cli(["pause", "default"], project, **env)
    assert paused.returncode == 0, paused.stderr
    assert "paused queue default" in paused.stdout
    assert redis_client.exists(KEYS.paused("default"))
    again = run_cli(["pause", "default"], project, **env)
    assert again.returncode == 0 and "already paused" in again.stdout
    top = run_cli(["top", "--json"], project, **env)
    assert json.loads(top.stdout)["queues"]["default"]["paused"] is True
    assert "paused" in run_cli(["top", "--once"], project, **env).stdout
    resumed = run_cli(["resume", "default"], project, **env)
    assert resumed.returncode == 0 and "resumed queue default" in resumed.stdout
    assert not redis_client.exists(KEYS.paused("default"))
    bad = run_cli(["pause", "nope"], project, **env)
    assert bad.returncode == 2 and "no queue 'nope'" in one_error_line(bad)
    helped = run_cli(["--help"], project)
    assert "pause" in helped.stdout and "resume" in helped.stdout


def test_a_caller_waiting_on_a_paused_queue_is_told_so_once(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with running_supervisor(redis_url, lease_ms=600), \
            client_for(redis_url, lease_ms=600) as client:
        pause("default")
        try:
            with caplog.at_level("WARNING", logger="sandboxrunner"), \
                    pytest.raises(Exception, match="gave up waiting"):
                client.run_job("echo", 1, wait_timeout=2000)  # three checks of its queue
        finally:
            resume("default")
    said = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
    assert len(said) == 1, said
    assert "queue 'default' is paused" in said[0] and "sandboxrunner resume default" in said[0]
