"""The asyncio client path: per-loop result listeners, and enqueues sent in pipelines."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
import redis

from tests.supervisors import client_for, running_supervisor


def test_arun_job_callers_of_one_loop_share_an_async_listener_and_start_no_thread(
        redis_url: str) -> None:
    async def main(client) -> list[object]:
        try:
            return await asyncio.gather(*(client.arun_job("echo", i) for i in range(20)))
        finally:
            listeners = list(client._async_listeners.values())
            await client.aclose()
            assert len(listeners) == 1 and not client._async_listeners

    with running_supervisor(redis_url), client_for(redis_url) as client:
        before = {t.name for t in threading.enumerate()}
        results = asyncio.run(main(client))
        assert [r["echo"] for r in results] == list(range(20))
        assert client._listener is None  # the threaded listener was never needed
        assert "sr-listener" not in {t.name for t in threading.enumerate()} - before


def test_the_async_listener_resubscribes_and_rechecks_after_losing_its_connection(
        redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sandboxrunner.listener")
    async def main(client) -> tuple[object, float]:
        try:
            call = asyncio.ensure_future(client.arun_job("slow", {"seconds": 0.3}))
            await asyncio.sleep(0.1)  # subscribed and enqueued: now drop the pub/sub link
            assert redis_client.client_kill_filter(_type="pubsub") >= 1
            started = time.monotonic()
            return await call, time.monotonic() - started
        finally:
            await client.aclose()

    with running_supervisor(redis_url), client_for(redis_url) as client:
        result, waited_s = asyncio.run(main(client))
    assert result == {"slept": 0.3, "tag": None}
    assert waited_s < 3  # from the listener's recheck, not the once-per-lease one (10 s)
    assert "result listener lost Redis" in caplog.text


def test_the_same_client_serves_callers_on_successive_event_loops(redis_url: str) -> None:
    async def main(client, i: int) -> object:
        try:
            return await client.arun_job("echo", i)
        finally:
            await client.aclose()

    with running_supervisor(redis_url), client_for(redis_url) as client:
        assert [asyncio.run(main(client, i))["echo"] for i in range(3)] == [0, 1, 2]


def test_enqueues_sent_together_survive_a_server_that_lost_its_scripts(
        redis_url: str, redis_client: redis.Redis) -> None:
    # concurrent arun_job calls share one pipeline; a NOSCRIPT reply in it (a restarted
    # or flushed server) makes those calls load the script and enqueue one by one
    async def main(client) -> list[object]:
        try:
            await client.arun_job("echo", -1)
            redis_client.script_flush()
            return await asyncio.gather(*(client.arun_job("echo", i) for i in range(10)))
        finally:
            await client.aclose()

    with running_supervisor(redis_url), client_for(redis_url) as client:
        results = asyncio.run(main(client))
    assert [r["echo"] for r in results] == list(range(10))
