"""End to end in thread mode: real Redis, real supervisors, real callers."""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

import sandboxrunner
from sandboxrunner import (
    DeadlockError,
    InvalidJobData,
    JobFailed,
    JobTimeout,
    NoSupervisor,
    UnknownJob,
    WaitTimeout,
)
from sandboxrunner.client import Client
from sandboxrunner.keys import Keys
from tests.deployments import every_deployment, server_of
from tests.supervisors import SupervisorProcess, client_for, running_supervisor, wait_for


@every_deployment
def test_sync_job_round_trips_its_result(redis_url: str) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        assert client.run_job("echo", {"a": 1}) == {"echo": {"a": 1}, "attempt": 1,
                                                     "queue": "default"}


def test_async_handler_round_trips(redis_url: str) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        assert client.run_job("async_echo", [1, 2]) == {"async_echo": [1, 2]}


def test_handler_exception_raises_job_failed_with_type_and_traceback(redis_url: str) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        with pytest.raises(JobFailed) as info:
            client.run_job("fail", {"card": "4242"})
    err = info.value
    assert err.error_type == "PaymentDeclined"
    assert err.error_message == "card 4242 declined"
    assert "tests/jobs/fail.py" in err.remote_traceback
    assert "raise PaymentDeclined" in err.remote_traceback


def test_unknown_job_lists_the_available_names(redis_url: str) -> None:
    with client_for(redis_url) as client:
        with pytest.raises(UnknownJob) as info:
            client.run_job("no_such_job")
    assert "no_such_job" in str(info.value)
    assert "echo" in str(info.value) and "slow" in str(info.value)


def test_non_json_data_is_refused_before_anything_is_enqueued(redis_url: str,
                                                              redis_client) -> None:
    with client_for(redis_url) as client:
        with pytest.raises(InvalidJobData, match="not JSON-serialisable"):
            client.run_job("echo", {"when": object()})
        with pytest.raises(InvalidJobData, match="positive"):
            client.run_job("echo", 1, timeout=0)
    assert redis_client.keys("*") == []


def test_a_non_json_return_value_fails_the_job_clearly(redis_url: str) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        with pytest.raises(JobFailed, match="not JSON-serialisable"):
            client.run_job("not_json")


@every_deployment
def test_thread_mode_timeout_raises_job_timeout_within_the_limit(redis_url: str) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        started = time.monotonic()
        with pytest.raises(JobTimeout) as info:
            client.run_job("slow", {"seconds": 3}, timeout=300)
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.3
    assert "300 ms" in str(info.value)


def test_a_deadline_later_than_the_watchdogs_nap_is_still_kept(redis_url: str) -> None:
    # the watchdog is not woken for a job due after its next wake-up (WATCH_IDLE_S)
    with running_supervisor(redis_url), client_for(redis_url) as client:
        started = time.monotonic()
        with pytest.raises(JobTimeout):
            client.run_job("slow", {"seconds": 5}, timeout=1500)
        assert 1.5 <= time.monotonic() - started < 2.3


def test_a_lone_job_runs_on_the_fetching_thread_which_hands_fetching_on(
        redis_url: str) -> None:
    with running_supervisor(redis_url, concurrency=3) as supervisor, \
            client_for(redis_url) as client:
        # no hand-over to a job thread when one job comes at a time
        assert client.run_job("thread_name").startswith("sr-fetch-default")
        # jobs kept by fetch threads hold up neither fetching nor each other
        slow = [client.enqueue("slow", {"seconds": 1.5}) for _ in range(2)]
        time.sleep(0.3)
        started = time.monotonic()
        assert [client.run_job("echo", i)["echo"] for i in range(5)] == list(range(5))
        assert time.monotonic() - started < 1.0
        assert [h.result(wait_timeout=5000)["slept"] for h in slow] == [1.5, 1.5]
        # the concurrency limit counts jobs on fetch threads too
        slow = [client.enqueue("slow", {"seconds": 0.5}) for _ in range(4)]
        time.sleep(0.2)
        assert len(supervisor.executors["default"].running()) == 3
        assert [h.result(wait_timeout=5000)["slept"] for h in slow] == [0.5] * 4


def test_stopping_waits_for_a_job_on_a_fetch_thread_then_settles_it(redis_url: str) -> None:
    with client_for(redis_url) as client:
        with running_supervisor(redis_url):
            handle = client.enqueue("thread_name")
            assert handle.result(wait_timeout=5000).startswith("sr-fetch-default")
            handle = client.enqueue("slow", {"seconds": 0.8})
            time.sleep(0.3)
        assert handle.result(wait_timeout=1000) == {"slept": 0.8, "tag": None}


def test_priority_jobs_are_served_while_default_has_a_backlog(redis_url: str) -> None:
    with running_supervisor(redis_url, concurrency=2), client_for(redis_url) as client:
        handles = [client.enqueue("slow", {"seconds": 2}) for _ in range(6)]
        time.sleep(0.2)
        started = time.monotonic()
        assert "urgent" in client.run_job("urgent", {"n": 1})
        assert time.monotonic() - started < 0.5
        assert handles[0].result(wait_timeout=5000) == {"slept": 2, "tag": None}


def test_wait_timeout_gives_up_but_leaves_the_job_to_finish(redis_url: str) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        with pytest.raises(WaitTimeout) as info:
            client.run_job("slow", {"seconds": 0.6}, wait_timeout=100)
        assert client.get_result(info.value.job_id, wait_timeout=3000)["slept"] == 0.6


@every_deployment
def test_enqueue_returns_a_handle_whose_result_can_be_awaited(redis_url: str) -> None:
    async def main(handle: sandboxrunner.JobHandle, client) -> object:
        try:
            return await handle
        finally:
            await client.aclose()

    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("echo", "x")
        assert asyncio.run(main(handle, client))["echo"] == "x"
        assert handle.result()["echo"] == "x"
        assert sandboxrunner.get_result(handle.id)["echo"] == "x"


def test_a_caller_without_any_supervisor_is_told_instead_of_hanging(redis_url: str) -> None:
    with client_for(redis_url) as client:
        started = time.monotonic()
        with pytest.raises(NoSupervisor, match="stays queued"):
            client.run_job("echo", 1)
        assert time.monotonic() - started < 3


def _same_but_ids(text: str) -> str:
    return re.sub(r"(default|priority)-[0-9a-f]{32}", "JOB", text)


def test_sync_and_async_callers_are_told_the_same_when_nobody_serves_the_queue(
        redis_url: str) -> None:
    async def main(client: Client) -> object:
        try:
            return await client.arun_job("echo", 2)
        finally:
            await client.aclose()

    with client_for(redis_url) as client:
        with pytest.raises(NoSupervisor) as sync_info:
            client.run_job("echo", 1)
        with pytest.raises(NoSupervisor) as async_info:
            asyncio.run(main(client))
    sync_text, async_text = (_same_but_ids(str(i.value)) for i in (sync_info, async_info))
    assert sync_text == async_text
    assert "no live supervisor serves queue 'default'" in sync_text
    assert "stays queued" in sync_text and "\n" not in sync_text


def test_a_job_holding_the_gil_silences_its_supervisor_and_callers_are_told_what_redis_shows(
        redis_url: str, redis_client: redis.Redis) -> None:
    sup = SupervisorProcess(redis_url)  # thread mode, lease 1000 ms
    try:
        sup.wait_ready()
        with client_for(redis_url) as client, ThreadPoolExecutor(2) as pool:
            hog = client.enqueue("gil_hog", {"seconds": 10})
            job_key = f"sr:{{sr:default}}:job:{hog.id}"
            wait_for(lambda: redis_client.hget(job_key, "status") == b"active")
            sid = redis_client.hget(job_key, "sid").decode()
            hogged = pool.submit(client.get_result, hog.id)
            unrelated = pool.submit(client.run_job, "echo", 1)
            with pytest.raises(NoSupervisor) as hogged_info:
                hogged.result(timeout=30)
            with pytest.raises(NoSupervisor) as unrelated_info:
                unrelated.result(timeout=30)
    finally:
        sup.stop()
    active = str(hogged_info.value)
    assert f"job {hog.id} is active on supervisor {sid}" in active, active
    silent_ms = re.search(r"stopped heartbeating (\d+) ms ago", active)
    assert silent_ms is not None and int(silent_ms[1]) >= 1000, active
    assert "--separate-process" in active and "stays queued" not in active
    queued = str(unrelated_info.value)
    assert "stays queued" in queued and f"{sid} stopped heartbeating" in queued, queued


def test_a_job_queued_before_its_supervisor_started_still_runs(redis_url: str) -> None:
    with client_for(redis_url, lease_ms=3000) as client:
        result: dict[str, object] = {}
        caller = threading.Thread(target=lambda: result.update(r=client.run_job("echo", 7)))
        caller.start()
        time.sleep(0.5)
        with running_supervisor(redis_url):
            caller.join(timeout=10)
    assert result["r"]["echo"] == 7


def test_nested_run_job_that_would_wait_for_itself_is_explained(redis_url: str) -> None:
    with running_supervisor(redis_url, concurrency=1), client_for(redis_url) as client:
        with pytest.raises(JobFailed) as info:
            client.run_job("nested", {"inner": "echo", "inner_data": 1})
    assert info.value.error_type == "DeadlockError"
    assert "concurrency" in info.value.error_message


def test_nested_run_job_with_free_slots_works(redis_url: str) -> None:
    with running_supervisor(redis_url, concurrency=4), client_for(redis_url) as client:
        assert client.run_job("nested", {"inner": "echo", "inner_data": 1})["echo"] == 1
        assert DeadlockError  # exported


def test_a_nested_arun_job_that_would_wait_for_itself_is_explained(redis_url: str) -> None:
    with running_supervisor(redis_url, concurrency=1), client_for(redis_url) as client:
        with pytest.raises(JobFailed) as info:
            client.run_job("nested_async", {"inner": "echo", "inner_data": 1},
                           wait_timeout=5000)
    assert info.value.error_type == "DeadlockError"
    assert info.value.error_message.startswith("arun_job from inside job 'nested_async'")
    assert "concurrency" in info.value.error_message


@pytest.mark.parametrize("outer", ["nested", "nested_async"])
def test_of_two_nested_calls_that_would_hold_every_slot_the_second_is_refused(
        redis_url: str, outer: str) -> None:
    # both outer jobs are claimed together, so both run before either calls: the first
    # to call counts its slot as waiting, and the second would then hold the last one
    with client_for(redis_url) as client:
        handles = [client.enqueue(outer, {"inner": "echo", "inner_data": i}) for i in (1, 2)]
        with running_supervisor(redis_url, concurrency=2):
            outcomes = []
            for handle in handles:
                try:
                    outcomes.append(handle.result(wait_timeout=5000)["echo"])
                except JobFailed as exc:
                    outcomes.append(exc.error_type)
    assert sorted(map(str, outcomes)) in (["1", "DeadlockError"], ["2", "DeadlockError"])


def test_workers_priority_serves_only_the_priority_queue(redis_url: str) -> None:
    sup = SupervisorProcess(redis_url, WORKERS="priority")
    try:
        sup.wait_ready(("priority",))
        with client_for(redis_url) as client:
            assert "urgent" in client.run_job("urgent", 1, wait_timeout=5000)
            with pytest.raises(NoSupervisor):
                client.run_job("echo", 1)
    finally:
        sup.stop()


def test_killed_supervisor_job_completes_on_another_and_caller_gets_it(
        redis_url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    first = SupervisorProcess(redis_url)
    second = None
    try:
        first.wait_ready()
        with client_for(redis_url) as client:
            out: dict[str, object] = {}
            caller = threading.Thread(target=lambda: out.update(
                r=client.run_job("record", {"file": str(runs), "seconds": 4})))
            caller.start()
            wait_for(lambda: runs.exists() and runs.read_text() != "")  # written, not just made
            # the other supervisor is up before the kill: a caller seeing no live supervisor
            # for a whole lease would be told NoSupervisor (a loaded machine starts slowly)
            second = SupervisorProcess(redis_url)
            second.wait_ready()
            first.signal(signal.SIGKILL)
            first.wait()
            caller.join(timeout=30)
        assert "pid" in out["r"]
        assert len(runs.read_text().splitlines()) == 2  # once on each supervisor
    finally:
        first.stop()
        if second:
            second.stop()


def test_a_job_whose_supervisor_dies_past_max_stalled_fails_as_stalled(
        redis_url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    first = SupervisorProcess(redis_url)
    second = None
    try:
        first.wait_ready()
        with client_for(redis_url) as client:
            handle = client.enqueue("record", {"file": str(runs), "seconds": 5})
            wait_for(lambda: runs.exists() and runs.read_text() != "")  # written, not just made
            first.signal(signal.SIGKILL)
            second = SupervisorProcess(redis_url, SANDBOXRUNNER_MAX_STALLED="0")
            second.wait_ready()
            with pytest.raises(JobFailed) as info:
                handle.result(wait_timeout=10_000)
        assert info.value.error_type == "JobStalled"
        assert len(runs.read_text().splitlines()) == 1
    finally:
        first.stop()
        if second:
            second.stop()


def test_sigterm_lets_running_jobs_finish_then_exits_zero(redis_url: str) -> None:
    sup = SupervisorProcess(redis_url)
    try:
        sup.wait_ready()
        with client_for(redis_url) as client:
            handle = client.enqueue("slow", {"seconds": 1})
            time.sleep(0.3)
            sup.signal(signal.SIGTERM)
            assert handle.result(wait_timeout=10_000) == {"slept": 1, "tag": None}
            assert sup.wait() == 0
            with pytest.raises(NoSupervisor):
                client.run_job("echo", 1)
    finally:
        sup.stop()



def test_a_unix_socket_url_works(tmp_path: Path) -> None:
    import tempfile

    from sandboxrunner.testserver import TestServer

    folder = Path(tempfile.mkdtemp(prefix="sr-", dir="/tmp"))  # socket paths must be short
    server = TestServer(tmp_path / "unix-redis",
                        options={"unixsocket": str(folder / "r.sock"), "unixsocketperm": "700"})
    server.start()
    try:
        url = f"unix://{folder / 'r.sock'}"
        with running_supervisor(url), client_for(url) as client:
            assert client.run_job("echo", "u")["echo"] == "u"
    finally:
        server.stop()


def test_thousands_of_concurrent_arun_job_calls_share_a_bounded_pool(redis_url: str) -> None:
    async def main(client) -> list[object]:
        try:
            return await asyncio.gather(*(sandboxrunner.arun_job("echo", i) for i in range(1000)))
        finally:
            await client.aclose()

    with running_supervisor(redis_url), client_for(redis_url) as client:
        results = asyncio.run(main(client))
    assert [r["echo"] for r in results] == list(range(1000))


@every_deployment
def test_jobs_arriving_one_at_a_time_cost_three_scripts_each(redis_url: str) -> None:
    # enqueue, claim (after BLMOVE), finish: the supervisor blocks again without first
    # claiming from the queue its last claim left empty; in a cluster all on the queue's
    # node, never redirected
    server = server_of(redis_url, Keys("sr").wait("default"))
    with running_supervisor(redis_url), client_for(redis_url) as client:
        client.run_job("echo", 0)  # warm: listener subscribed, scripts loaded
        server.config_resetstat()
        for i in range(20):
            client.run_job("echo", i)
        stats = server.info("commandstats")
        errors = server.info("errorstats")
    server.close()
    scripts = stats.get("cmdstat_evalsha", {}).get("calls", 0)
    assert 60 <= scripts <= 66, scripts
    assert 19 <= stats.get("cmdstat_blmove", {}).get("calls", 0) <= 22  # one still blocked
    redirects = {f"errorstat_{code}" for code in ("MOVED", "ASK", "TRYAGAIN", "NOSCRIPT")}
    assert not redirects & set(errors), errors
