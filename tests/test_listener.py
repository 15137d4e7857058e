"""The result listeners: the threads' `Listener`, whose waiting callers take turns reading
the reply channel (leader/followers), and the asyncio path: per-loop result listeners, and
enqueues sent in pipelines."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from sandboxrunner import WaitTimeout
from sandboxrunner.keys import Keys
from sandboxrunner.listener import Listener, Waiter
from sandboxrunner.testserver import TestServer
from tests.deployments import every_deployment
from tests.supervisors import SupervisorProcess, client_for, running_supervisor


class _ReadSpy:
    """Records which threads read the listener's reply connection, and the most at once."""

    def __init__(self, listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
        self.readers: set[int] = set()
        self.most_at_once = 0
        self._reading = 0
        self._lock = threading.Lock()
        listener.subscribe("default")
        pubsub = listener._channels["default"]._pubsub
        read = pubsub.get_message

        def get_message(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._reading += 1
                self.most_at_once = max(self.most_at_once, self._reading)
                self.readers.add(threading.get_ident())
            try:
                return read(*args, **kwargs)
            finally:
                with self._lock:
                    self._reading -= 1

        monkeypatch.setattr(pubsub, "get_message", get_message)


def _in_thread(calls: set[int], fn: Any, *args: Any, **kwargs: Any) -> Any:
    calls.add(threading.get_ident())
    return fn(*args, **kwargs)


def test_sync_callers_read_their_own_replies_and_nobody_reads_while_nobody_waits(
        redis_url: str, redis_client: redis.Redis) -> None:
    sup = SupervisorProcess(redis_url)  # out of process: every thread here is the test's
    try:
        sup.wait_ready()
        with client_for(redis_url) as client:
            before = set(threading.enumerate())
            assert client.run_job("echo", 1)["echo"] == 1
            assert set(threading.enumerate()) == before  # no listener thread
            listener = client.listener
            job_id = "default-" + "5" * 32
            channel = Keys("sr").reply_channel("default", listener.cid)
            redis_client.spublish(channel, f'{job_id}\ncompleted\n{{"late": true}}')
            time.sleep(0.1)
            waiter = Waiter()
            listener.register(job_id, waiter)
            assert waiter.outcome is None  # not read yet: it waited on the connection
            outcome = listener.wait(waiter, job_id, 2.0)
            assert outcome is not None and outcome.value() == {"late": True}
    finally:
        sup.stop()


def test_two_hundred_threads_waiting_at_once_all_get_their_results_as_the_reader_changes(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    callers: set[int] = set()
    with running_supervisor(redis_url), client_for(redis_url) as client:
        spy = _ReadSpy(client.listener, monkeypatch)

        def three_calls(i: int) -> list[Any]:
            return [_in_thread(callers, client.run_job, "echo", [i, n])["echo"]
                    for n in range(3)]

        with ThreadPoolExecutor(200) as pool:
            results = list(pool.map(three_calls, range(200)))
    assert results == [[[i, n] for n in range(3)] for i in range(200)]
    assert spy.most_at_once == 1
    assert len(spy.readers) > 1 and spy.readers <= callers


def test_a_leader_whose_wait_timeout_expires_hands_over_to_a_caller_still_waiting(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a lease of 10 s: the follower's once-per-lease re-check cannot stand in for a reader
    with running_supervisor(redis_url), client_for(redis_url, lease_ms=10_000) as client:
        spy = _ReadSpy(client.listener, monkeypatch)
        callers: set[int] = set()
        with ThreadPoolExecutor(2) as pool:
            leader = pool.submit(_in_thread, callers, client.run_job, "slow",
                                 {"seconds": 1}, wait_timeout=300)
            time.sleep(0.1)  # the first caller waits alone: it reads
            started = time.monotonic()
            follower = pool.submit(_in_thread, callers, client.run_job, "slow",
                                   {"seconds": 0.5})
            with pytest.raises(WaitTimeout):
                leader.result(timeout=5)
            assert follower.result(timeout=15) == {"slept": 0.5, "tag": None}
            waited_s = time.monotonic() - started
    assert waited_s < 2
    assert spy.most_at_once == 1 and spy.readers == callers and len(callers) == 2


def test_a_waiting_caller_resubscribes_and_rechecks_after_losing_its_connection(
        redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sandboxrunner.listener")
    with running_supervisor(redis_url), client_for(redis_url, lease_ms=10_000) as client, \
            ThreadPoolExecutor(1) as pool:
        call = pool.submit(client.run_job, "slow", {"seconds": 0.3})
        time.sleep(0.1)  # subscribed and waiting: now drop the pub/sub link
        assert redis_client.client_kill_filter(_type="pubsub") >= 1
        started = time.monotonic()
        assert call.result(timeout=15) == {"slept": 0.3, "tag": None}
        waited_s = time.monotonic() - started
    assert waited_s < 3  # from the reader's recheck, not the once-per-lease one (10 s)
    assert "result listener lost Redis" in caplog.text


def test_a_leader_that_gives_up_during_an_outage_leaves_the_reconnect_to_another_caller(
        fresh_server: TestServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sandboxrunner.listener")
    url = fresh_server.url
    with running_supervisor(url), client_for(url, lease_ms=10_000) as client, \
            ThreadPoolExecutor(2) as pool:
        leader = pool.submit(client.run_job, "slow", {"seconds": 1.5}, wait_timeout=600)
        time.sleep(0.1)  # the first caller waits alone: it reads
        follower = pool.submit(client.run_job, "slow", {"seconds": 1})
        time.sleep(0.2)
        fresh_server.stop()
        with pytest.raises(WaitTimeout):
            leader.result(timeout=10)  # given up while Redis is down
        time.sleep(0.3)
        fresh_server.restart()
        back = time.monotonic()
        assert follower.result(timeout=20) == {"slept": 1, "tag": None}
        waited_s = time.monotonic() - back
    assert waited_s < 6  # the follower reconnected and re-read; its lease is 10 s
    assert "result listener lost Redis" in caplog.text


@every_deployment
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
