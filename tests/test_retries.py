"""Retries: a failed attempt runs again after its backoff, up to the job's retries."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from sandboxrunner import InvalidJobData, JobFailed, JobTimeout
from sandboxrunner.keys import Keys
from tests.supervisors import client_for, running_supervisor


def _runs(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_a_failing_job_is_retried_with_exponential_backoff_until_it_succeeds(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with running_supervisor(redis_url), client_for(redis_url) as client:
        started = time.monotonic()
        handle = client.enqueue("flaky", {"file": str(runs), "succeed_on": 3})
        assert handle.result(wait_timeout=10_000) == {"attempt": 3}
        elapsed = time.monotonic() - started
    assert _runs(runs) == [1, 2, 3]
    assert 0.3 <= elapsed < 2.5  # 100 ms then 200 ms of backoff
    errors = json.loads(redis_client.hget(Keys().job(handle.id), "errors"))
    assert [e["message"] for e in errors] == ["attempt 1 failed", "attempt 2 failed"]


def test_the_caller_gets_the_last_error_once_retries_are_used_up(redis_url: str,
                                                                 tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with running_supervisor(redis_url), client_for(redis_url) as client:
        with pytest.raises(JobFailed, match="attempt 3 failed"):
            client.run_job("flaky", {"file": str(runs), "succeed_on": 99})
    assert _runs(runs) == [1, 2, 3]


def test_run_job_retries_overrides_the_job_and_zero_means_run_once(redis_url: str,
                                                                   tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with running_supervisor(redis_url), client_for(redis_url) as client:
        with pytest.raises(JobFailed):
            client.run_job("flaky", {"file": str(runs), "succeed_on": 2}, retries=0)
        assert _runs(runs) == [1]
        with pytest.raises(InvalidJobData, match="retries"):
            client.run_job("flaky", {}, retries=-1)


def test_a_timeout_counts_as_a_failed_attempt(redis_url: str, redis_client: redis.Redis
                                              ) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("slow", {"seconds": 1}, timeout=100, retries=1)
        with pytest.raises(JobTimeout):
            handle.result(wait_timeout=10_000)
    record = redis_client.hgetall(Keys().job(handle.id))
    assert int(record[b"attempt"]) == 2 and int(record[b"fails"]) == 2


def test_jobs_are_not_retried_by_default(redis_url: str) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("fail", {"card": "1"})
        with pytest.raises(JobFailed):
            handle.result(wait_timeout=5000)
        assert client.store.job_fields(handle.id, "attempt")[0] == "1"
