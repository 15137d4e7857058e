"""Retries when the attempt's process dies. The rest of the retry family is in
tests/test_retries.py (handler errors, timeouts, backoff, overrides, no retry by default)."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from tests.faults.common import K
from tests.supervisors import client_for, running_supervisor


def test_a_child_crash_counts_as_a_failed_attempt_and_the_job_is_retried(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    with running_supervisor(redis_url, use_separate_process=True, concurrency=1,
                            workers="default"), client_for(redis_url) as client:
        handle = client.enqueue("fault_crash_once", {"file": str(attempts)})
        result = handle.result(wait_timeout=10_000)
    ran = [line.split() for line in attempts.read_text().splitlines()]
    assert [a for a, _ in ran] == ["1", "2"] and ran[0][1] != ran[1][1]  # a new child
    assert result["attempt"] == 2
    errors = json.loads(redis_client.hget(K.job(handle.id), "errors"))
    assert len(errors) == 1 and errors[0]["type"] == "ChildCrashed"
    assert "SIGKILL" in errors[0]["message"]
