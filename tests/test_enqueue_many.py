"""enqueue_many: a batch of one job's calls in one round trip, validated like enqueue and
written all or nothing; from Python (sync and asyncio), on every deployment."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

from sandboxrunner import (
    InvalidJobData,
    RedisFull,
    UnknownJob,
    aenqueue,
    aenqueue_many,
    enqueue_many,
)
from sandboxrunner.bulk import MAX_BATCH
from sandboxrunner.calls import prepare_batch
from sandboxrunner.keys import Keys
from sandboxrunner.testserver import TestServer
from tests.deployments import every_deployment
from tests.supervisors import client_for, running_supervisor

KEYS = Keys()


def _script_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items()
               if k.removeprefix("cmdstat_") in ("evalsha", "eval"))


@every_deployment
def test_a_batch_is_one_script_call_and_every_job_runs_in_order(
        redis_url: str, redis_client: redis.Redis) -> None:
    with client_for(redis_url) as client:
        handles = client.enqueue_many("echo", [{"n": n} for n in range(300)])
        assert len(handles) == len({h.id for h in handles}) == 300
        assert redis_client.llen(KEYS.wait("default")) == 300
        assert int(redis_client.hget(KEYS.stats("default"), "enqueued")) >= 300
        with running_supervisor(redis_url):
            got = [h.result(wait_timeout=20_000)["echo"] for h in handles]
    assert got == [{"n": n} for n in range(300)]


def test_a_batch_costs_one_script_call(redis_url: str, redis_client: redis.Redis) -> None:
    with client_for(redis_url) as client:
        client.enqueue_many("echo", [0])  # the script loaded, the connection made
        before = _script_calls(redis_client)
        client.enqueue_many("echo", list(range(1000)))
        assert _script_calls(redis_client) - before == 1


def test_one_bad_item_refuses_the_whole_batch_naming_it(
        redis_url: str, redis_client: redis.Redis) -> None:
    items = [{"n": 0}, {"n": 1}, {"n": 2}, {"bad": {1, 2}}, {"n": 4}]
    with client_for(redis_url) as client:
        with pytest.raises(InvalidJobData, match=r"item 3 of the batch") as caught:
            client.enqueue_many("echo", items)
        assert "\n" not in str(caught.value) and "nothing was enqueued" in str(caught.value)
        with pytest.raises(InvalidJobData, match=r"at most 10000 jobs a call"):
            client.enqueue_many("echo", [1] * (MAX_BATCH + 1))
        with pytest.raises(InvalidJobData, match=r"a list"):
            client.enqueue_many("echo", {"n": 1})  # a dict is one job's data, not a batch
        with pytest.raises(UnknownJob):
            client.enqueue_many("no_such_job", [1, 2])
        assert client.enqueue_many("echo", []) == []
    assert redis_client.llen(KEYS.wait("default")) == 0
    assert redis_client.hget(KEYS.stats("default"), "enqueued") is None


def test_keyed_singletons_in_a_batch_attach_to_the_run_holding_their_key(
        redis_url: str, tmp_path: Path) -> None:
    file = tmp_path / "runs.txt"
    items = [{"key": k, "file": str(file), "seconds": 0.2} for k in ("a", "b", "a", "a")]
    with client_for(redis_url) as client:
        handles = client.enqueue_many("single_keyed", items)
        assert handles[0].id == handles[2].id == handles[3].id != handles[1].id
        again = client.enqueue_many("single_keyed", items[:1])  # still queued: attaches
        assert again[0].id == handles[0].id
        with running_supervisor(redis_url):
            results = [h.result(wait_timeout=10_000) for h in handles]
    assert results[0] == results[2] == results[3] != results[1]
    assert len(file.read_text().splitlines()) == 2


def test_the_asyncio_twin_and_the_module_functions(redis_url: str) -> None:
    async def main() -> list[str]:
        try:
            handles = await aenqueue_many("echo", ["x", "y"], timeout=5000)
            return [(await h)["echo"] for h in handles]
        finally:
            await client.aclose()

    with running_supervisor(redis_url), client_for(redis_url) as client:
        assert asyncio.run(main()) == ["x", "y"]
        handles = enqueue_many("echo", ["z"])
        assert handles[0].result(wait_timeout=5000)["echo"] == "z"


def test_a_full_redis_refuses_the_whole_batch(tmp_path: Path) -> None:
    with TestServer(tmp_path / "redis") as server, redis.Redis.from_url(server.url) as r:
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", int(r.info("memory")["used_memory"]) + 2 * 2**20)
        with client_for(server.url) as client:
            big = [{"blob": "x" * 2000, "n": n} for n in range(2000)]  # ~4 MiB: over
            with pytest.raises(RedisFull):
                client.enqueue_many("echo", big)
            assert r.llen(KEYS.wait("default")) == 0
            assert not list(r.scan_iter(match=KEYS.job("default-*")))
            small = client.enqueue_many("echo", big[:10])  # room for a small batch
            assert len(small) == 10 and r.llen(KEYS.wait("default")) == 10


@pytest.mark.parametrize("name, item", [("echo", {"n": 1}), ("single_keyed", {"key": "k"})])
def test_a_batch_sent_again_after_a_lost_reply_is_not_enqueued_twice(
        redis_url: str, redis_client: redis.Redis, name: str, item: dict) -> None:
    with client_for(redis_url) as client:
        batch = prepare_batch(client.registry.get(name), [item, dict(item, x=2)], None, None,
                              client.config)
        first = client.store.enqueue_many(batch)
        again = client.store.enqueue_many(batch)  # as a retry after a lost reply sends it
    assert again.job_ids == first.job_ids
    queued = 1 if name == "single_keyed" else 2  # the second keyed call attached
    assert redis_client.llen(KEYS.wait("default")) == queued
    assert int(redis_client.hget(KEYS.stats("default"), "enqueued")) == queued


def test_aenqueue_enqueues_from_an_event_loop_without_blocking_it(redis_url: str) -> None:
    async def main() -> list[Any]:
        try:
            handles = await asyncio.gather(*(aenqueue("echo", n, delay=0 if n else None)
                                             for n in range(20)))
            assert len({h.id for h in handles}) == 20
            keyed = await aenqueue("echo", "k", job_id="same-key")
            assert (await aenqueue("echo", "k", job_id="same-key")).id == keyed.id
            return [(await h)["echo"] for h in [*handles, keyed]]
        finally:
            await client.aclose()

    with running_supervisor(redis_url), client_for(redis_url) as client:
        assert asyncio.run(main()) == [*range(20), "k"]
