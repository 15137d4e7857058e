"""Idempotency keys: ``enqueue(..., job_id=KEY)`` names the job ``Q-KEY``; the same key again,
while the job is queued, running, or its result is kept, returns that job and its result
instead of running it twice, also when two processes race to enqueue it."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path

import pytest
import redis

from sandboxrunner import InvalidJobData
from sandboxrunner.keys import Keys
from tests.clirun import run_cli
from tests.deployments import every_deployment
from tests.supervisors import MODES, client_for, running_supervisor

KEYS = Keys()


def _runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@every_deployment
@pytest.mark.parametrize("mode", MODES)
def test_the_same_key_while_queued_running_or_settled_returns_the_same_job(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path, mode: str) -> None:
    runs = tmp_path / "runs"
    data = {"file": str(runs), "seconds": 0.3}
    with client_for(redis_url) as client:
        first = client.enqueue("record", data, job_id="invoice-42")
        assert first.id == "default-invoice-42"
        again = client.enqueue("record", data, job_id="invoice-42")  # queued
        assert again.id == first.id
        assert redis_client.llen(KEYS.wait("default")) == 1
        with running_supervisor(redis_url, **MODES[mode]):
            while redis_client.hget(KEYS.job(first.id), "status") != b"active":
                time.sleep(0.01)
            assert client.enqueue("record", data, job_id="invoice-42").id == first.id
            result = first.result(wait_timeout=10_000)
            # settled: the same job's result, and it does not run again
            assert client.run_job("record", data, job_id="invoice-42") == result
            assert client.enqueue("record", data, job_id="invoice-42").result() == result
    assert _runs(runs) == 1
    assert redis_client.hget(KEYS.stats("default"), "enqueued") == b"1"


def test_arun_job_and_a_delayed_job_take_a_key_too(redis_url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("record", {"file": str(runs)}, delay=200, job_id="k.1:a_b-c")
        assert handle.id == "default-k.1:a_b-c"

        async def twice() -> list[object]:
            try:
                return list(await asyncio.gather(*(
                    client.arun_job("record", {"file": str(runs)}, job_id="k.1:a_b-c")
                    for _ in range(2))))
            finally:
                await client.aclose()

        first, second = asyncio.run(twice())
        assert first == second == handle.result()
    assert _runs(runs) == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 101, "é", "a/b", 42])
def test_a_bad_key_is_refused_and_nothing_is_enqueued(
        redis_url: str, redis_client: redis.Redis, key: object) -> None:
    with client_for(redis_url) as client:
        with pytest.raises(InvalidJobData, match="not a valid idempotency key"):
            client.enqueue("echo", 1, job_id=key)  # type: ignore[arg-type]
        with pytest.raises(InvalidJobData, match="not a valid idempotency key"):
            client.run_job("echo", 1, job_id=key)  # type: ignore[arg-type]
    assert redis_client.llen(KEYS.wait("default")) == 0
    assert redis_client.hget(KEYS.stats("default"), "enqueued") is None


def _enqueue_keys(redis_url: str, start_at: float, count: int, out: Path) -> None:
    """In a child process: enqueue keys race-0..COUNT-1 once START_AT (epoch s) comes."""
    with client_for(redis_url) as client:
        client.store.live_supervisors("default")  # connected before the race starts
        time.sleep(max(0.0, start_at - time.time()))
        ids = [client.enqueue("record", {"file": str(out)}, job_id=f"race-{n}").id
               for n in range(count)]
    out.with_suffix(f".{multiprocessing.current_process().pid}").write_text("\n".join(ids))


def test_an_idempotent_enqueue_racing_itself_from_two_processes_makes_one_job(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    runs, count = tmp_path / "runs", 200
    spawn = multiprocessing.get_context("spawn")
    start_at = time.time() + 2  # both children are up by then, and go at once
    procs = [spawn.Process(target=_enqueue_keys, args=(redis_url, start_at, count, runs))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    replies = [p.read_text().split() for p in tmp_path.glob("runs.*")]
    assert len(replies) == 2 and replies[0] == replies[1]
    assert redis_client.llen(KEYS.wait("default")) == count
    assert redis_client.hget(KEYS.stats("default"), "enqueued") == str(count).encode()
    with running_supervisor(redis_url):
        with client_for(redis_url) as client:
            for job_id in replies[0]:
                client.get_result(job_id, wait_timeout=10_000)
    assert _runs(runs) == count


def test_the_cli_finds_a_keyed_job_by_its_id(redis_url: str, tmp_path: Path) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        client.run_job("echo", 7, job_id="order-7")
    got = run_cli(["result", "default-order-7"], tmp_path, REDIS_URL=redis_url)
    assert got.returncode == 0, got.stderr
    assert '"echo": 7' in got.stdout
