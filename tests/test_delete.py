"""Delete: a settled job's record, log lines and index entries go; a queued, delayed or
throttled job is removed atomically and its waiting callers get JobDeleted; a running job
is refused ("cancel it first"); an unknown or malformed id changes nothing. The CLI's
`sandboxrunner delete ID` says which, in one line."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from sandboxrunner import (
    DeleteResult,
    InvalidJobState,
    JobCancelled,
    JobDeleted,
    JobFailed,
    JobNotFound,
    adelete_job,
    delete_job,
)
from sandboxrunner.keys import Keys
from tests.clirun import one_error_line, run_cli
from tests.deployments import every_deployment
from tests.supervisors import MODES, client_for, running_supervisor, wait_for

K = Keys("sr")
INDEXES = [K.recent("default"), K.failures("default")]
DONE = [K.done("default", s) for s in ("completed", "failed", "cancelled")]


def _listed(r: redis.Redis, job_id: str) -> list[str]:
    """The indexes of the default queue that still name JOB_ID."""
    named = [key for key in INDEXES if job_id.encode() in r.lrange(key, 0, -1)]
    named += [key for key in DONE if r.zscore(key, job_id) is not None]
    for key in (K.wait("default"), ):
        if job_id.encode() in r.lrange(key, 0, -1):
            named.append(key)
    named += [key for key in (K.delayed("default"), K.throttled("default"))
              if r.zscore(key, job_id) is not None]
    return named


@every_deployment
@pytest.mark.parametrize("mode", list(MODES))
def test_a_settled_jobs_record_log_and_index_entries_are_gone(
        redis_url: str, redis_client: redis.Redis, mode: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        done = client.enqueue("echo", {"n": 1})  # echo writes a log line
        assert done.result(wait_timeout=10_000)["echo"] == {"n": 1}
        failed = client.enqueue("fail", {"card": "x"})
        with pytest.raises(JobFailed):
            failed.result(wait_timeout=10_000)
        wait_for(lambda: redis_client.exists(K.job_log(done.id)), what="its log line")
        assert _listed(redis_client, done.id) and _listed(redis_client, failed.id)
        for handle, status in ((done, "completed"), (failed, "failed")):
            result = client.delete_job(handle.id)
            assert isinstance(result, DeleteResult)
            assert (result.outcome, result.status) == ("deleted", status)
            assert handle.id in result.message and status in result.message
            assert not redis_client.exists(K.job(handle.id), K.job_log(handle.id))
            assert _listed(redis_client, handle.id) == []
            with pytest.raises(JobNotFound):
                client.get_job(handle.id)
        assert [i.id for i in client.list_jobs("default", "completed").items] == []


@every_deployment
def test_a_queued_job_is_removed_and_its_waiting_caller_gets_job_deleted(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    with client_for(redis_url) as client:  # no supervisor: it stays queued
        handle = client.enqueue("single_global", {"file": str(tmp_path / "runs")})
        caught: list[BaseException] = []

        def wait() -> None:
            try:
                handle.result(wait_timeout=10_000)
            except JobCancelled as exc:
                caught.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.2)  # the caller waits
        result = client.delete_job(handle.id)
        waiter.join(5)
        assert (result.outcome, result.status) == ("dequeued", "queued")
        assert caught and isinstance(caught[0], JobDeleted), caught
        assert "deleted before it ran" in str(caught[0]) and caught[0].job_id == handle.id
        assert not redis_client.exists(K.job(handle.id))
        assert _listed(redis_client, handle.id) == []
        # its singleton key is free: the next run is a job of its own
        again = client.enqueue("single_global", {"file": str(tmp_path / "runs")})
        assert again.id != handle.id
        assert int(redis_client.hget(K.stats("default"), "deleted")) == 1
        with pytest.raises(JobNotFound):
            client.get_result(handle.id)


def test_a_delayed_and_a_throttled_job_leave_their_sets(
        redis_url: str, redis_client: redis.Redis) -> None:
    with client_for(redis_url) as client:
        delayed = client.enqueue("echo", 1, delay=60_000)
        assert client.delete_job(delayed.id).status == "delayed"
        assert _listed(redis_client, delayed.id) == []
        with running_supervisor(redis_url):
            handles = [client.enqueue("limited") for _ in range(8)]  # 5 a second
            throttled = wait_for(lambda: next((h for h in handles if client.get_job(
                h.id).status == "throttled"), None), what="a throttled job")
            window = K.limit("default", "limited")
            assert redis_client.zscore(window, f"r:{throttled.id}") is not None
            assert client.delete_job(throttled.id).outcome == "dequeued"
            assert _listed(redis_client, throttled.id) == []
            assert redis_client.zscore(window, f"r:{throttled.id}") is None
            for h in handles:
                if h is not throttled:
                    assert h.result(wait_timeout=10_000) == h.id


@pytest.mark.parametrize("mode", list(MODES))
def test_a_running_job_is_refused_with_cancel_it_first(
        redis_url: str, redis_client: redis.Redis, mode: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        handle = client.enqueue("slow", {"seconds": 0.5})
        wait_for(lambda: client.get_job(handle.id).status == "active", what="it runs")
        before = redis_client.hgetall(K.job(handle.id))
        with pytest.raises(InvalidJobState) as refused:
            client.delete_job(handle.id)
        assert "cancel it first" in str(refused.value) and handle.id in str(refused.value)
        assert redis_client.hgetall(K.job(handle.id)) == before
        assert handle.result(wait_timeout=10_000)["slept"] == 0.5


def test_an_unknown_or_malformed_id_changes_nothing(
        redis_url: str, redis_client: redis.Redis) -> None:
    with client_for(redis_url) as client:
        client.enqueue("echo", 1)
        keys = sorted(redis_client.keys())
        for given in ("default-" + "0" * 32, "bad id", 42):
            with pytest.raises(JobNotFound):
                client.delete_job(given)  # type: ignore[arg-type]
        assert sorted(redis_client.keys()) == keys


def test_the_module_functions_and_the_async_twin(redis_url: str) -> None:
    with client_for(redis_url) as client:
        one, two = client.enqueue("echo", 1), client.enqueue("echo", 2)
        assert delete_job(one.id).outcome == "dequeued"

        async def main() -> Any:
            try:
                return await adelete_job(two.id)
            finally:
                await client.aclose()

        assert asyncio.run(main()).outcome == "dequeued"
        with pytest.raises(JobNotFound):
            client.get_job(two.id)


def test_the_cli_deletes_by_short_id_and_says_what_it_did(
        redis_url: str, tmp_path: Path) -> None:
    with running_supervisor(redis_url, **MODES["processes"]), \
            client_for(redis_url) as client:
        settled = client.enqueue("echo", 1)
        settled.result(wait_timeout=10_000)
        done = run_cli(["delete", settled.id.partition("-")[2][:8]], tmp_path,
                       REDIS_URL=redis_url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().startswith(f"deleted {settled.id} (echo, completed)")
        running = client.enqueue("slow", {"seconds": 30})
        wait_for(lambda: client.get_job(running.id).status == "active", what="it runs")
        refused = run_cli(["delete", running.id], tmp_path, REDIS_URL=redis_url)
        assert refused.returncode == 2
        assert "cancel it first" in one_error_line(refused)
        client.cancel(running.id)  # its child is killed
        wait_for(lambda: client.get_job(running.id).status == "cancelled", what="it stopped")
    for given in ("default-" + "0" * 32, "bad id"):
        missing = run_cli(["delete", given], tmp_path, REDIS_URL=redis_url)
        assert missing.returncode == 2 and one_error_line(missing)
