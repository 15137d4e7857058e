"""retry(job_id): a failed or cancelled job runs again with its data, under the same id
(its attempts and errors go on), with its retries budget renewed; any other job is
refused with a clear error and nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from sandboxrunner import InvalidJobState, JobCancelled, JobFailed
from sandboxrunner.keys import Keys
from tests.deployments import every_deployment
from tests.supervisors import MODES, client_for, running_supervisor, wait_for


def _runs(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@every_deployment
@pytest.mark.parametrize("mode", MODES)
def test_a_failed_job_runs_again_under_its_id_and_keeps_its_history(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path, mode: str) -> None:
    runs = tmp_path / "runs"
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        handle = client.enqueue("flaky", {"file": str(runs), "succeed_on": 2}, retries=0)
        with pytest.raises(JobFailed, match="attempt 1 failed"):
            handle.result(wait_timeout=10_000)
        again = client.retry(handle.id)
        assert again.id == handle.id
        assert again.result(wait_timeout=10_000) == {"attempt": 2}
        info = client.get_job(handle.id)
    assert _runs(runs) == [1, 2]
    assert info.status == "completed" and info.attempts == 2
    assert [e.message for e in info.errors] == ["attempt 1 failed"]
    assert redis_client.pttl(Keys().job(handle.id)) > 0  # expires again once settled


def test_a_retried_job_gets_its_retries_again(redis_url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("flaky", {"file": str(runs), "succeed_on": 4}, retries=1)
        with pytest.raises(JobFailed, match="attempt 2 failed"):
            handle.result(wait_timeout=10_000)
        assert client.retry(handle.id).result(wait_timeout=10_000) == {"attempt": 4}
    assert _runs(runs) == [1, 2, 3, 4]


def test_a_cancelled_job_can_be_retried(redis_url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with client_for(redis_url) as client:
        handle = client.enqueue("record", {"file": str(runs)})
        client.cancel(handle.id)
        with pytest.raises(JobCancelled):
            handle.result()
        client.retry(handle.id)
        with running_supervisor(redis_url):
            assert "pid" in handle.result(wait_timeout=10_000)
    assert len(runs.read_text().splitlines()) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_job_that_did_not_fail_is_refused_and_left_alone(
        redis_url: str, redis_client: redis.Redis, mode: str) -> None:
    with client_for(redis_url) as client:
        queued = client.enqueue("echo", {"n": 1})
        with pytest.raises(InvalidJobState, match="is queued: only a failed or cancelled"):
            client.retry(queued.id)
        with running_supervisor(redis_url, **MODES[mode]):
            queued.result(wait_timeout=10_000)
            record = redis_client.hgetall(Keys().job(queued.id))
            with pytest.raises(InvalidJobState, match="is completed"):
                client.retry(queued.id)
            assert redis_client.hgetall(Keys().job(queued.id)) == record




def test_a_failed_singleton_is_not_retried_while_another_run_holds_its_key(
        redis_url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with client_for(redis_url) as client:
        first = client.enqueue("single_global", {"file": str(runs)})
        client.cancel(first.id)
        second = client.enqueue("single_global", {"file": str(runs)})
        with pytest.raises(InvalidJobState, match=f"singleton.*{second.id}"):
            client.retry(first.id)
        assert client.get_job(first.id).status == "cancelled"
        with running_supervisor(redis_url):
            second.result(wait_timeout=10_000)
            wait_for(lambda: client.get_job(second.id).status == "completed", what="done")
            assert client.retry(first.id).result(wait_timeout=10_000)["job"] == first.id
