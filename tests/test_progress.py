"""Progress and get_job: ctx.progress from a thread and from a child, coalesced, stored on
the job record, told to waiting callers; get_job's typed JobInfo."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis

from sandboxrunner import InvalidProgress, JobInfo, JobNotFound, JobProgress
from sandboxrunner.keys import Keys
from tests.deployments import every_deployment
from tests.supervisors import MODES, client_for, running_supervisor, wait_for


@every_deployment
@pytest.mark.parametrize("mode", MODES)
def test_progress_is_on_the_record_and_get_job_tells_where_the_job_runs(
        redis_url: str, mode: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]) as sup, client_for(redis_url) as client:
        handle = client.enqueue("progress_steps", {"steps": 2000, "hold": 1.5})

        def reported() -> JobInfo | None:
            i = client.get_job(handle.id)
            done = i.progress is not None and i.progress.fraction == 1.0
            return i if done and (mode == "threads" or i.child_pid is not None) else None

        info = wait_for(reported, what="its last progress report (and its child)")
        assert info.status == "active" and info.queue == "default"
        assert info.name == "progress_steps" and info.attempts == 1
        assert info.progress == JobProgress(handle.id, 1.0, "step 2000 of 2000")
        assert info.supervisor == sup.sid and info.started_at and info.enqueued_at
        assert info.ended_at is None and info.result is None
        if mode == "processes":
            worker = next(r for r in sup.snapshot()["running"] if r["id"] == handle.id)
            assert info.child_pid == int(worker["worker"])
        else:
            assert info.child_pid is None
        assert handle.result(wait_timeout=10_000) == {"steps": 2000}
        done = client.get_job(handle.id)
    assert done.status == "completed" and done.result == {"steps": 2000}
    assert done.ended_at is not None and done.ended_at >= done.started_at
    assert done.errors == () and done.error is None


@pytest.mark.parametrize("mode", MODES)
def test_a_tight_loop_of_progress_costs_redis_about_ten_writes_a_second(
        redis_url: str, redis_client: redis.Redis, mode: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        handle = client.enqueue("progress_loop", {"seconds": 1.0})
        key = Keys().job(handle.id)
        writes = _count_hset(redis_client, key, until=lambda: handle.result(10_000))
    calls = writes.pop("result")["calls"]
    assert calls > 10_000  # the handler was not slowed down to Redis's pace
    # claim and finish write the record too; about 10 progress writes in 1 s (with margin)
    assert writes["count"] <= 20, writes


def _count_hset(client: redis.Redis, key: str, until: Any) -> dict[str, Any]:
    """How many HSETs hit KEY while UNTIL() runs (keyspace notifications), and its value."""
    client.config_set("notify-keyspace-events", "Kh")
    pubsub = client.pubsub()
    pubsub.subscribe(f"__keyspace@0__:{key}")
    got: dict[str, Any] = {"count": 0}
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            if message and message["type"] == "message" and message["data"] == b"hset":
                got["count"] += 1

    thread = threading.Thread(target=listen)
    thread.start()
    try:
        got["result"] = until()
        time.sleep(0.3)  # late writes are counted too
    finally:
        stop.set()
        thread.join()
        pubsub.close()
        client.config_set("notify-keyspace-events", "")
    return got


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value, message, says", [
    (1.5, None, "from 0 to 1"), (-0.1, None, "from 0 to 1"), ("half", None, "'half'"),
    (True, None, "True"), ("nan", None, "nan"), (0.5, 42, "message must be text")])
def test_a_bad_progress_value_raises_a_clear_error_and_records_nothing(
        redis_url: str, redis_client: redis.Redis, mode: str, value: Any, message: Any,
        says: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        handle = client.enqueue("progress_bad", {"value": value, "message": message})
        got = handle.result(wait_timeout=10_000)
        assert client.get_job(handle.id).progress is None
    assert got["raised"] == "InvalidProgress" and got["is_value_error"], got
    assert says in got["message"] and "nothing was recorded" in got["message"]
    assert redis_client.hget(Keys().job(handle.id), "progress") is None
    assert issubclass(InvalidProgress, ValueError)


@pytest.mark.parametrize("mode", MODES)
def test_a_waiting_caller_hears_the_progress_of_its_job(redis_url: str, mode: str) -> None:
    heard: list[JobProgress] = []
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        got = client.run_job("progress_steps", {"steps": 500, "hold": 0.3},
                             on_progress=heard.append, wait_timeout=10_000)
    assert got == {"steps": 500}
    assert heard and heard[-1].fraction == 1.0 and heard[-1].message == "step 500 of 500"
    assert [p.fraction for p in heard] == sorted(p.fraction for p in heard)
    assert len(heard) <= 10  # coalesced: a few reports, not 500


def test_an_asyncio_caller_hears_progress_on_its_event_loop(redis_url: str) -> None:
    heard: list[tuple[JobProgress, bool]] = []

    async def main() -> Any:
        loop = asyncio.get_running_loop()

        def on_progress(p: JobProgress) -> None:
            heard.append((p, asyncio.get_running_loop() is loop))

        try:
            return await client.arun_job("progress_steps", {"steps": 100, "hold": 0.3},
                                         on_progress=on_progress, wait_timeout=10_000)
        finally:
            await client.aclose()

    with running_supervisor(redis_url), client_for(redis_url) as client:
        assert asyncio.run(main()) == {"steps": 100}
    assert heard and heard[-1][0].fraction == 1.0 and all(on_loop for _, on_loop in heard)


def test_get_job_of_an_unknown_or_malformed_id_is_a_clear_error(redis_url: str) -> None:
    with client_for(redis_url) as client:
        with pytest.raises(JobNotFound, match="no job default-0+: never enqueued"):
            client.get_job("default-" + "0" * 32)
        with pytest.raises(JobNotFound, match="not a sandboxrunner job id"):
            client.get_job("nope")
        with pytest.raises(JobNotFound, match="got int"):
            client.get_job(42)  # type: ignore[arg-type]


def test_get_job_tells_a_retry_waiting_out_its_backoff_and_its_errors(
        redis_url: str, tmp_path: Any) -> None:
    runs = tmp_path / "runs"
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("flaky", {"file": str(runs), "succeed_on": 3},
                                retries=2)
        info = wait_for(lambda: (i := client.get_job(handle.id)).status == "delayed" and i,
                        what="a retry waiting")
        assert info.due_at is not None and info.attempts == 1 and info.retries == 2
        assert [e.message for e in info.errors] == ["attempt 1 failed"]
        handle.result(wait_timeout=10_000)
        asyncio.run(_aget_status(client, handle.id, "completed"))


async def _aget_status(client: Any, job_id: str, status: str) -> None:
    assert (await client.aget_job(job_id)).status == status


@pytest.mark.parametrize("mode", MODES)
def test_top_draws_a_progress_bar_per_running_job(redis_url: str, mode: str,
                                                  tmp_path: Any) -> None:
    from tests.test_top import screen_of, short

    with running_supervisor(redis_url, **MODES[mode]) as sup, client_for(redis_url) as client:
        reporting = client.enqueue("progress_steps", {"steps": 4, "hold": 30})
        quiet = client.enqueue("slow", {"seconds": 30})
        wait_for(lambda: {reporting.id, quiet.id} <= {r["id"] for r in sup.snapshot()[
            "running"] if r["id"] != reporting.id or r.get("progress") == 1.0},
                 what="both running, the reporting one at 100 %")
        time.sleep(0.5)  # the next heartbeat publishes the snapshot top reads
        for width in (80, 120):
            lines = screen_of(redis_url, tmp_path, width)
            row = next(line for line in lines if line.startswith(short(reporting.id)))
            assert "100%" in row and "█" in row, "\n".join(lines)
            other = next(line for line in lines if line.startswith(short(quiet.id)))
            assert "%" not in other, "\n".join(lines)


@pytest.mark.parametrize("mode", MODES)
def test_the_last_report_of_a_job_that_ends_at_once_is_on_its_record(redis_url: str,
                                                                       mode: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        for _ in range(5):
            handle = client.enqueue("progress_steps", {"steps": 3})
            assert handle.result(wait_timeout=10_000) == {"steps": 3}
            assert client.get_job(handle.id).progress == JobProgress(handle.id, 1.0,
                                                                     "step 3 of 3")


def test_a_caller_attached_to_a_running_singleton_hears_its_progress(redis_url: str) -> None:
    heard: list[JobProgress] = []
    with running_supervisor(redis_url), client_for(redis_url) as client:
        first = client.enqueue("progress_single", {"steps": 6})
        wait_for(lambda: client.get_job(first.id).status == "active", what="the first run")
        got = client.run_job("progress_single", {"steps": 6}, on_progress=heard.append,
                             wait_timeout=10_000)
    assert got == {"steps": 6}
    assert heard and heard[-1].fraction == 1.0 and heard[-1].job_id == first.id, heard
