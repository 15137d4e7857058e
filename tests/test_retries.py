"""Retries: a failed attempt runs again after its backoff, up to the job's retries."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import redis

from sandboxrunner import InvalidJobData, JobFailed, JobTimeout
from sandboxrunner.job import PreparedJob, Settlement, Status
from sandboxrunner.job_errors import ErrorInfo
from sandboxrunner.keys import Keys
from sandboxrunner.snapshot import SnapshotReader
from sandboxrunner.store import Store
from tests.supervisors import (
    MODES,
    SupervisorProcess,
    assert_idle,
    client_for,
    make_config,
    running_supervisor,
    wait_for,
)


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


def _attempt_times(path: Path) -> list[float]:
    return [float(line.split()[1]) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("mode", MODES)
def test_retries_run_after_their_backoff_even_under_a_second(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path, mode: str) -> None:
    # the supervisor blocks on an empty queue for up to a second: a retry due sooner must
    # wake it, not wait for that block to time out
    runs = tmp_path / "runs"
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        handle = client.enqueue("backoff_timed", {"file": str(runs), "succeed_on": 4})
        assert handle.result(wait_timeout=10_000) == {"attempt": 4}
    times = _attempt_times(runs)
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert len(gaps) == 3
    for gap, delay_s in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert delay_s <= gap < delay_s + 0.3, gaps
    # the wake-ups are neither jobs nor attempts, and leave nothing behind
    stats = {k.decode(): int(v) for k, v in redis_client.hgetall(Keys().stats("default")).items()}
    assert stats["enqueued"] == 1 and stats["completed"] == 1 and stats["retried"] == 3
    assert redis_client.llen(Keys().wait("default")) == 0


def test_retry_wake_ups_stay_one_at_most_and_are_dropped_by_the_next_claim(
        redis_url: str, redis_client: redis.Redis) -> None:
    # three jobs fail while their supervisor is busy (nobody blocked on the queue), each
    # due sooner than the one before: the queue holds one wake-up, not three
    store = Store(make_config(redis_url), redis_url)
    wait = Keys().wait("default")
    for i, delay_ms in enumerate((3000, 2000, 1000)):
        store.enqueue(PreparedJob("default", f"default-{i:032x}", "flaky", "{}", 1000,
                                 retries=1, backoff_json=json.dumps({"delay": delay_ms})))
    jobs, _ = store.claim("default", "sup-a", 3)
    error = ErrorInfo(kind="error", type="ValueError", message="boom").to_json()
    for job in jobs:
        store.finish("default", "sup-a", [Settlement(job.id, Status.FAILED, error)])
    assert redis_client.llen(wait) == 1
    # ... which no dashboard counts as a waiting job
    snapshot = SnapshotReader(make_config(redis_url), redis_url)
    assert {q.name: q.waiting for q in snapshot.read().queues}["default"] == 0
    snapshot.close()
    # the wake-up is neither a job nor a malformed entry; the reply says when to look again
    again, next_retry_ms = store.claim("default", "sup-a", 10)
    assert again == [] and 900 <= next_retry_ms <= 1000
    assert redis_client.llen(wait) == 0
    assert redis_client.llen(Keys().active("default", "sup-a")) == 0
    # once nothing more is due sooner, no wake-up is pushed
    store.enqueue(PreparedJob("default", "default-" + "f" * 32, "flaky", "{}", 1000, retries=1,
                             backoff_json=json.dumps({"delay": 5000})))
    (job,), _ = store.claim("default", "sup-a", 1)
    store.finish("default", "sup-a", [Settlement(job.id, Status.FAILED, error)])
    assert redis_client.llen(wait) == 0
    store.close()


def test_a_wake_up_returns_a_blocked_wait_at_once_and_never_enters_the_lease(
        redis_url: str, redis_client: redis.Redis) -> None:
    store, other = (Store(make_config(redis_url), redis_url) for _ in range(2))
    store.enqueue(PreparedJob("default", "default-" + "a" * 32, "flaky", "{}", 1000, retries=1,
                             backoff_json=json.dumps({"delay": 300})))
    (job,), _ = other.claim("default", "sup-b", 1)
    error = ErrorInfo(kind="error", type="ValueError", message="boom").to_json()
    threading.Timer(0.2, lambda: other.finish(
        "default", "sup-b", [Settlement(job.id, Status.FAILED, error)])).start()
    started = time.monotonic()
    jobs, next_retry_ms = store.wait_and_claim("default", "sup-a", 5, timeout_s=5)
    assert time.monotonic() - started < 2  # woken by the retry, not the 5 s timeout
    assert jobs == [] and 0 < next_retry_ms <= 300
    assert redis_client.llen(Keys().active("default", "sup-a")) == 0
    assert redis_client.llen(Keys().wait("default")) == 0
    store.close()
    other.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_supervisor_waiting_for_a_distant_retry_stays_idle(
        redis_url: str, redis_client: redis.Redis, mode: str) -> None:
    # a pending retry bounds the supervisor's blocking wait; it must not turn into a spin
    args = ["--separate-process", "--concurrency", "2"] if mode == "processes" else []
    sup = SupervisorProcess(redis_url, args, SANDBOXRUNNER_WORKERS="default",
                            SANDBOXRUNNER_HEARTBEAT_MS="1000", SANDBOXRUNNER_LEASE_MS="10000")
    try:
        sup.wait_ready()
        with client_for(redis_url) as client:
            client.enqueue("retry_distant")
        wait_for(lambda: redis_client.zcard(Keys().delayed("default")), what="a retry")
        assert_idle(sup.proc.pid)
    finally:
        sup.stop()
