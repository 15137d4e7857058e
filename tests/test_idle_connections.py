"""The connections a Store sends on (idle_connections.py): reused across threads, never
more than the sends under way, checked before each use, never shared with a forked child;
and a job record written without its default fields (job.py)."""

from __future__ import annotations

import os
import threading
from typing import Any

from sandboxrunner.store import Store
from tests.supervisors import client_for, make_config


def _connections_made(redis_url: str, redis_client: Any, threads: int, together: bool
                      ) -> int:
    """How many connections a Store made while THREADS threads each sent 50 commands,
    one thread after another, or all TOGETHER."""
    own = redis_client.client_id()
    names = {c.get("lib-name") for c in redis_client.client_list()}

    def ours() -> int:
        return sum(1 for c in redis_client.client_list()
                   if int(c["id"]) != own and c.get("lib-name") in names)

    store = Store(make_config(redis_url), redis_url)
    try:
        before = ours()
        barrier = threading.Barrier(threads if together else 1)

        def sends() -> None:
            barrier.wait()
            for _ in range(50):
                store.server_time_ms()

        started = [threading.Thread(target=sends) for _ in range(threads)]
        for thread in started:
            thread.start()
            if not together:
                thread.join()
        for thread in started:
            thread.join()
        return ours() - before
    finally:
        store.close()


def test_threads_one_after_another_share_one_connection(redis_url: str,
                                                         redis_client: Any) -> None:
    assert _connections_made(redis_url, redis_client, 10, together=False) == 1


def test_concurrent_threads_take_no_more_connections_than_sends_under_way(
        redis_url: str, redis_client: Any) -> None:
    assert 1 <= _connections_made(redis_url, redis_client, 4, together=True) <= 4


def test_a_connection_the_server_dropped_is_replaced_before_the_next_send(
        redis_url: str, redis_client: Any) -> None:
    store = Store(make_config(redis_url), redis_url)
    try:
        store.server_time_ms()  # its connection is idle now
        assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
        # no retry anywhere on this path: a send on the dropped socket would fail
        assert store.server_time_ms() > 0
    finally:
        store.close()


def _echoes(store: Store, who: str, times: int) -> bool:
    """Whether every ECHO of WHO came back as sent (a shared socket mixes up replies)."""
    key = store.keys.sups("default")
    return all(store.router.send(key, [("ECHO", f"{who}-{i}")]) == [f"{who}-{i}".encode()]
               for i in range(times))


def test_a_forked_child_never_sends_on_its_parents_connection(redis_url: str) -> None:
    store = Store(make_config(redis_url), redis_url)
    try:
        assert _echoes(store, "parent", 1)  # its connection is idle now
        pid = os.fork()
        if pid == 0:  # the child: its own connection, or replies would interleave
            code = 1
            try:
                code = 0 if _echoes(store, "child", 2000) else 2
            finally:
                os._exit(code)
        assert _echoes(store, "parent", 2000)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        store.close()


def test_an_enqueue_writes_only_the_fields_that_are_not_at_their_default(
        redis_url: str, redis_client: Any) -> None:
    with client_for(redis_url) as client:
        plain = client.enqueue("echo", {"n": 1})
        record = redis_client.hgetall(client.store.keys.job(plain.id))
        assert set(record) == {b"name", b"data", b"timeout", b"status", b"enq"}
        assert client.get_job(plain.id).attempts == 0
        waited = client.enqueue("echo", {"n": 2}, retries=2)
        assert redis_client.hget(client.store.keys.job(waited.id), "retries") == b"2"
        job = client.prepare("echo", {"n": 3}, None)
        client.store.enqueue(job, reply_cid="caller-1")  # a caller waits for this one
        assert redis_client.hget(client.store.keys.job(job.job_id), "reply") == b"caller-1"
