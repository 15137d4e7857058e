"""Cancel: a queued or delayed job is removed at once, a running one is stopped (its child
killed in process mode, ctx.cancelled or its task cancelled in thread mode); waiting
callers get JobCancelled; settled jobs are left alone; a cancel never retries and frees a
singleton; a cancel that lands between a BLMOVE and its claim is honoured."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from sandboxrunner import JobCancelled, JobNotFound
from sandboxrunner.job import claimed_batch
from sandboxrunner.keys import Keys
from sandboxrunner.store import Store
from tests.deployments import every_deployment
from tests.supervisors import MODES, client_for, make_config, running_supervisor, wait_for


def _raises_cancelled(call: Any) -> JobCancelled:
    with pytest.raises(JobCancelled) as caught:
        call()
    return caught.value


@every_deployment
def test_a_queued_job_is_removed_and_its_waiting_caller_gets_job_cancelled(
        redis_url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with client_for(redis_url) as client:  # no supervisor: it stays queued
        handle = client.enqueue("record", {"file": str(runs)})
        caught: list[BaseException] = []
        waiter = threading.Thread(target=lambda: caught.append(_raises_cancelled(
            lambda: handle.result(wait_timeout=10_000))))
        waiter.start()
        time.sleep(0.2)  # the caller waits
        result = handle.cancel()
        waiter.join(5)
        assert result and result.outcome == "cancelled" and result.status == "queued"
        assert caught and "cancelled" in str(caught[0]) and caught[0].job_id == handle.id
        info = client.get_job(handle.id)
        assert info.status == "cancelled" and info.error and info.error.type == "JobCancelled"
        assert handle.id not in [i.decode() for i in client.store.redis.lrange(
            Keys().wait("default"), 0, -1)]
        with running_supervisor(redis_url):
            time.sleep(0.5)  # a supervisor now serves the queue: the job never runs
        assert not runs.exists()
        _raises_cancelled(lambda: client.get_result(handle.id))


def test_a_retry_waiting_out_its_backoff_is_cancelled_and_never_runs_again(
        redis_url: str, redis_client: redis.Redis) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("retry_distant")
        wait_for(lambda: client.get_job(handle.id).status == "delayed", what="its retry")
        assert client.cancel(handle.id).outcome == "cancelled"
        assert redis_client.zscore(Keys().delayed("default"), handle.id) is None
        info = client.get_job(handle.id)
        assert info.status == "cancelled" and info.attempts == 1
        _raises_cancelled(lambda: handle.result(wait_timeout=5_000))


def test_a_running_child_and_its_processes_are_killed_and_the_child_replaced(
        redis_url: str, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    with running_supervisor(redis_url, **MODES["processes"]) as sup, \
            client_for(redis_url) as client:
        handle = client.enqueue("proc_grandchildren", {"file": str(pids_file)},
                                timeout=60_000)
        wait_for(pids_file.exists, what="the grandchildren started")
        child = wait_for(lambda: client.get_job(handle.id).child_pid, what="its child")
        grandchildren = [int(p) for p in pids_file.read_text().split()]
        started = time.monotonic()
        assert client.cancel(handle.id).outcome == "cancelling"
        _raises_cancelled(lambda: handle.result(wait_timeout=10_000))
        took_s = time.monotonic() - started
        for pid in [child, *grandchildren]:
            wait_for(lambda pid=pid: not _alive(pid), what=f"process {pid} gone")
        assert client.get_job(handle.id).status == "cancelled"
        # the pool replaced the child: the next job runs
        assert client.run_job("echo", {"n": 1}, wait_timeout=10_000)["echo"] == {"n": 1}
        assert sup.executors["default"].snapshot()["capacity"] == 2
    assert took_s < 3  # within about a heartbeat (200 ms here), with a wide margin


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_thread_handler_sees_ctx_cancelled_and_the_job_settles_cancelled(
        redis_url: str, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("cancel_aware", {"seconds": 30, "file": str(seen)})
        wait_for(lambda: client.get_job(handle.id).status == "active", what="it runs")
        assert not client.get_job(handle.id).cancel_requested
        assert client.cancel(handle.id).outcome == "cancelling"
        assert client.get_job(handle.id).cancel_requested  # until its handler returns
        _raises_cancelled(lambda: handle.result(wait_timeout=10_000))
        assert seen.read_text() == "cancelled"
        assert client.get_job(handle.id).status == "cancelled"


def test_an_async_handlers_task_is_cancelled(redis_url: str, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("cancel_async", {"seconds": 30, "file": str(seen)})
        wait_for(lambda: client.get_job(handle.id).status == "active", what="it runs")
        asyncio.run(_acancel(client, handle.id))
        _raises_cancelled(lambda: handle.result(wait_timeout=10_000))
        assert seen.read_text() == "cancelled"


async def _acancel(client: Any, job_id: str) -> None:
    assert (await client.acancel(job_id)).outcome == "cancelling"


@pytest.mark.parametrize("mode", MODES)
def test_a_cancelled_running_job_is_never_retried(redis_url: str, tmp_path: Path,
                                                  mode: str) -> None:
    runs = tmp_path / "runs"
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        handle = client.enqueue("cancel_retried", {"seconds": 1.0, "file": str(runs)})
        wait_for(runs.exists, what="its first attempt")
        client.cancel(handle.id)
        _raises_cancelled(lambda: handle.result(wait_timeout=10_000))
        time.sleep(0.3)
        info = client.get_job(handle.id)
    assert info.status == "cancelled" and info.attempts == 1
    assert runs.read_text().split() == ["1"]


@pytest.mark.parametrize("mode", MODES)
def test_a_settled_job_is_left_alone_with_a_clear_answer(redis_url: str, mode: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        handle = client.enqueue("echo", {"n": 1})
        handle.result(wait_timeout=10_000)
        result = client.cancel(handle.id)
        assert not result and result.outcome == "settled" and result.status == "completed"
        assert client.get_job(handle.id).status == "completed"
        assert handle.result() == {"echo": {"n": 1}, "attempt": 1, "queue": "default"}


def test_cancelling_a_queued_singleton_releases_its_claim(redis_url: str,
                                                          tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with client_for(redis_url) as client:
        first = client.enqueue("single_global", {"file": str(runs)})
        assert client.enqueue("single_global", {"file": str(runs)}).id == first.id
        client.cancel(first.id)
        second = client.enqueue("single_global", {"file": str(runs)})
        assert second.id != first.id
        with running_supervisor(redis_url):
            assert second.result(wait_timeout=10_000)["job"] == second.id
    assert [line.split()[1] for line in runs.read_text().splitlines()] == [second.id] * 2


@pytest.mark.parametrize(("call", "malformed"), [("cancel", "nope"), ("retry", "default")])
def test_unknown_and_malformed_ids_are_clear_errors_and_change_nothing(
        redis_url: str, redis_client: redis.Redis, call: str, malformed: str) -> None:
    with client_for(redis_url) as client:
        act = getattr(client, call)  # cancel and retry take ids the same way
        before = redis_client.dbsize()
        with pytest.raises(JobNotFound, match="no job default-0+"):
            act("default-" + "0" * 32)
        with pytest.raises(JobNotFound, match="not a sandboxrunner job id"):
            act(malformed)
        assert redis_client.dbsize() == before


def test_a_cancel_between_a_blmove_and_its_claim_is_honoured(redis_url: str,
                                                             redis_client: redis.Redis) -> None:
    """The id sits at the head of a lease with status queued (a BLMOVE moved it, its claim
    has not run yet): the cancel marks it cancelled, and the claim does not hand it out."""
    config = make_config(redis_url)
    store = Store(config, redis_url)
    k = Keys()
    try:
        with client_for(redis_url) as client:
            handle = client.enqueue("echo", {"n": 1})
            moved = redis_client.blmove(k.wait("default"), k.active("default", "sid-x"),
                                        1, "RIGHT", "LEFT")
            assert moved.decode() == handle.id
            assert client.cancel(handle.id).outcome == "cancelled"
            # the claim pipelined behind that BLMOVE: HEAD = 1, nothing more to pop
            jobs, _ = claimed_batch(store._run("claim", store._claim_keys("default", "sid-x"),
                                               [k.queue_prefix("default"), "sid-x", 0, "1"]))
            assert jobs == []
            assert client.get_job(handle.id).status == "cancelled"
            _raises_cancelled(lambda: handle.result(wait_timeout=2_000))
    finally:
        store.close()


@pytest.mark.parametrize("mode", MODES)
def test_cancels_racing_claims_settle_every_job_once_and_lose_none(
        redis_url: str, tmp_path: Path, mode: str) -> None:
    """Each job is cancelled while supervisors claim it: it runs to its outcome or is
    cancelled, never both, never lost, never stuck."""
    runs = tmp_path / "runs"
    outcomes: dict[str, str] = {}
    settings = {**MODES[mode], "concurrency": 2}
    with running_supervisor(redis_url, **settings), running_supervisor(redis_url, **settings), \
            client_for(redis_url) as client:
        handles = [client.enqueue("record_id", {"file": str(runs), "seconds": 0.02})
                   for _ in range(120)]
        # cancel every other job while the supervisors claim: some are waiting, some
        # just claimed, some running, some done
        for handle in handles[::2]:
            outcomes[handle.id] = client.cancel(handle.id).outcome
            time.sleep(0.005)
        statuses = wait_for(lambda: _all_settled(client, handles), timeout_s=20,
                            what="every job settled")
    ran = runs.read_text().split() if runs.exists() else []
    assert len(ran) == len(set(ran))  # nothing ran twice
    for job_id in set(statuses) - set(outcomes):  # never asked to cancel: all ran
        assert statuses[job_id] == "completed" and job_id in ran
    for job_id, status in ((i, statuses[i]) for i in outcomes):
        assert status in ("completed", "cancelled"), (job_id, status)
        if outcomes[job_id] == "cancelled":  # removed before it started: it never runs
            assert status == "cancelled" and job_id not in ran
        if status == "completed":  # it had settled before the cancel came
            assert outcomes[job_id] == "settled" and job_id in ran
    # the cancels met jobs not started and jobs running (or done)
    assert "cancelled" in outcomes.values() and len(set(outcomes.values())) > 1, outcomes


def _all_settled(client: Any, handles: list[Any]) -> dict[str, str] | None:
    statuses = {h.id: client.get_job(h.id).status for h in handles}
    settled = all(s in ("completed", "failed", "cancelled") for s in statuses.values())
    return statuses if settled else None


@pytest.mark.parametrize("mode", MODES)
def test_a_job_asked_to_cancel_is_not_handed_back_by_a_stopping_supervisor(
        redis_url: str, tmp_path: Path, mode: str) -> None:
    """Its supervisor stops before a heartbeat told it of the cancel: the job settles
    cancelled instead of going back to the queue to run again."""
    runs = tmp_path / "runs"
    with client_for(redis_url) as client:
        with running_supervisor(redis_url, heartbeat_ms=5000, lease_ms=20_000,
                                **MODES[mode]) as sup:
            handle = client.enqueue("record_id", {"file": str(runs), "seconds": 30})
            wait_for(lambda: client.get_job(handle.id).status == "active", what="it runs")
            assert client.cancel(handle.id).outcome == "cancelling"
            sup.stop(grace_ms=0)
        assert client.get_job(handle.id).status == "cancelled"
        _raises_cancelled(lambda: handle.result(wait_timeout=2_000))
        with running_supervisor(redis_url):
            time.sleep(0.5)
    assert not runs.exists()


def test_a_job_asked_to_cancel_is_not_requeued_when_its_supervisor_died(
        redis_url: str, redis_client: redis.Redis) -> None:
    """Its supervisor died before a heartbeat told it of the cancel: taking its lease back
    settles the job as cancelled instead of running it again."""
    store = Store(make_config(redis_url, lease_ms=200, heartbeat_ms=50), redis_url)
    try:
        with client_for(redis_url) as client:
            handle = client.enqueue("echo", {"n": 1})
            store.heartbeat("default", "dead")
            assert [j.id for j in store.claim("default", "dead", 1)[0]] == [handle.id]
            assert client.cancel(handle.id).outcome == "cancelling"
            time.sleep(0.25)
            assert store.heartbeat("default", "alive") == ["dead"]
            assert store.requeue_stalled("default", "dead") == (0, 0)
            assert client.get_job(handle.id).status == "cancelled"
            assert redis_client.llen(Keys().wait("default")) == 0
            _raises_cancelled(lambda: handle.result(wait_timeout=2_000))
    finally:
        store.close()
