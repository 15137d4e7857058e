"""The Redis data model: leases, settlement records, bounded history, counters."""

from __future__ import annotations

import json
import time

import pytest
import redis

from sandboxrunner.errors import JobFailed
from sandboxrunner.job import PreparedJob, Settlement, Status
from sandboxrunner.keys import Keys
from sandboxrunner.store import Store
from tests.supervisors import client_for, make_config, running_supervisor

K = Keys("sr")


def _store(redis_url: str, **overrides) -> Store:
    return Store(make_config(redis_url, **overrides), redis_url)


def test_keys_of_a_queue_share_one_hash_tag() -> None:
    job_id = "priority-" + "ab" * 16
    tagged = [K.wait("priority"), K.active("priority", "s1"), K.sups("priority"),
              K.job(job_id), K.stats("priority"), K.recent("priority"), K.job_log(job_id)]
    assert all("{sr:priority}" in key for key in tagged)
    assert "{sr:default}" in K.wait("default")


def test_claim_moves_jobs_into_the_supervisors_lease_and_finish_settles_them(
        redis_url: str, redis_client: redis.Redis) -> None:
    store = _store(redis_url)
    for i in range(3):
        store.enqueue(PreparedJob("default", f"default-{i:032x}", "echo", json.dumps(i), 1000))
    jobs, next_retry_ms = store.claim("default", "sup-a", 2)
    assert next_retry_ms == -1
    assert [j.data_json for j in jobs] == ["0", "1"]
    assert redis_client.llen(K.wait("default")) == 1
    assert redis_client.llen(K.active("default", "sup-a")) == 2
    assert redis_client.hget(K.job(jobs[0].id), "status") == b"active"
    recorded = store.finish("default", "sup-a", [Settlement(jobs[0].id, Status.COMPLETED, "7")])
    assert recorded == 1
    assert redis_client.hget(K.job(jobs[0].id), "result") == b"7"
    assert 0 < redis_client.pttl(K.job(jobs[0].id)) <= 3_600_000
    assert redis_client.llen(K.active("default", "sup-a")) == 1
    # a late second outcome for the same job is dropped: it left the lease
    assert store.finish("default", "sup-a", [Settlement(jobs[0].id, Status.FAILED, "{}")]) == 0
    store.close()


def test_the_claim_pipelined_behind_a_blocking_wait_takes_only_what_that_wait_moved(
        redis_url: str, redis_client: redis.Redis) -> None:
    store = _store(redis_url)
    held = "default-" + "a" * 32
    store.enqueue(PreparedJob("default", held, "echo", "1", 1000))
    assert [j.id for j in store.claim("default", "sup-a", 1)[0]] == [held]
    # the wait times out on an empty queue: the job already held at the head of the lease
    # is not handed over a second time
    assert store.wait_and_claim("default", "sup-a", 5, timeout_s=0.05) == ([], -1)
    # a job arriving during the wait is moved and claimed in the same round trip, with
    # up to COUNT - 1 more taken along
    ids = [f"default-{i:032x}" for i in range(4)]
    for job_id in ids:
        store.enqueue(PreparedJob("default", job_id, "echo", "2", 1000))
    jobs, _ = store.wait_and_claim("default", "sup-a", 3, timeout_s=1)
    assert [j.id for j in jobs] == ids[:3]
    assert all(redis_client.hget(K.job(j.id), "status") == b"active" for j in jobs)
    assert redis_client.llen(K.active("default", "sup-a")) == 4
    # a malformed entry the wait moves is reported (no name) and leaves the lease
    redis_client.rpush(K.wait("default"), "default-" + "f" * 32)
    redis_client.lpop(K.wait("default"))  # ids[3]: the queue holds only the malformed entry
    jobs, _ = store.wait_and_claim("default", "sup-a", 1, timeout_s=1)
    assert [(j.id, j.name) for j in jobs] == [("default-" + "f" * 32, "")]
    assert redis_client.llen(K.active("default", "sup-a")) == 4
    store.close()


def test_a_lapsed_lease_requeues_then_fails_as_stalled(redis_url: str,
                                                       redis_client: redis.Redis) -> None:
    store = _store(redis_url, lease_ms=200, heartbeat_ms=50, max_stalled=1)
    job_id = "default-" + "1" * 32
    store.enqueue(PreparedJob("default", job_id, "echo", "1", 1000))
    store.heartbeat("default", "dead")
    store.claim("default", "dead", 1)
    time.sleep(0.25)
    assert store.heartbeat("default", "alive") == ["dead"]
    assert store.requeue_stalled("default", "dead") == (1, 0)
    assert redis_client.lrange(K.wait("default"), 0, -1) == [job_id.encode()]
    store.heartbeat("default", "dead2")
    store.claim("default", "dead2", 1)
    time.sleep(0.25)
    store.heartbeat("default", "alive")
    assert store.requeue_stalled("default", "dead2") == (0, 1)
    error = json.loads(redis_client.hget(K.job(job_id), "error"))
    assert error["kind"] == "stalled" and "max_stalled=1" in error["message"]
    store.close()


def test_requeue_refuses_a_supervisor_that_is_alive(redis_url: str) -> None:
    store = _store(redis_url)
    store.heartbeat("default", "alive")
    assert store.requeue_stalled("default", "alive") == (-1, -1)
    store.close()


def test_history_is_capped_and_counters_move_with_the_jobs(redis_url: str,
                                                           redis_client: redis.Redis) -> None:
    with running_supervisor(redis_url, history_size=5), client_for(redis_url) as client:
        for i in range(8):
            client.run_job("echo", i)
        for _ in range(2):
            with pytest.raises(JobFailed):
                client.run_job("fail", {"card": "x"})
    assert redis_client.llen(K.recent("default")) == 5
    assert redis_client.llen(K.failures("default")) == 2
    stats = {k.decode(): int(v) for k, v in redis_client.hgetall(K.stats("default")).items()}
    assert stats["enqueued"] == 10 and stats["completed"] == 8 and stats["failed"] == 2
    rate = redis_client.hgetall(K.rate("default"))
    assert sum(int(v.split(b":")[1]) for v in rate.values()) == 10
    assert len(rate) <= 60


def test_settled_records_and_logs_expire_after_result_ttl(redis_url: str,
                                                          redis_client: redis.Redis) -> None:
    with running_supervisor(redis_url, result_ttl=300), client_for(redis_url,
                                                                   result_ttl=300) as client:
        handle = client.enqueue("echo", 1)
        handle.result(wait_timeout=5000)
        time.sleep(0.2)  # log lines are written in batches
        assert redis_client.exists(K.job(handle.id), K.job_log(handle.id)) == 2
        time.sleep(0.5)
        assert redis_client.exists(K.job(handle.id), K.job_log(handle.id)) == 0


def test_a_malformed_queue_entry_is_dropped_and_the_supervisor_carries_on(
        redis_url: str, redis_client: redis.Redis) -> None:
    import pickle

    redis_client.lpush(K.wait("default"), pickle.dumps({"evil": True}))
    with running_supervisor(redis_url) as supervisor, client_for(redis_url) as client:
        assert client.run_job("echo", 1)["echo"] == 1
        assert redis_client.llen(K.active("default", supervisor.sid)) == 0
    assert redis_client.llen(K.wait("default")) == 0


def test_a_job_record_naming_an_unknown_job_fails_cleanly(redis_url: str) -> None:
    store = _store(redis_url)
    job_id = "default-" + "2" * 32
    store.enqueue(PreparedJob("default", job_id, "not_registered", "1", 1000))
    with running_supervisor(redis_url), client_for(redis_url) as client:
        with pytest.raises(JobFailed) as info:
            client.get_result(job_id, wait_timeout=5000)
    assert "no such job" in str(info.value) and "not_registered" in str(info.value)
    store.close()


def test_the_supervisor_index_forgets_supervisors_dead_for_an_hour(
        redis_url: str, redis_client: redis.Redis) -> None:
    store = _store(redis_url)
    now_ms = int(time.time() * 1000)
    redis_client.zadd(K.supervisors(), {"crashed-long-ago": now_ms - 7_200_000,
                                        "crashed-recently": now_ms - 60_000})
    store.publish_supervisor("alive", {"heartbeat_ms": now_ms}, 3000)
    assert sorted(redis_client.zrange(K.supervisors(), 0, -1)) == [b"alive",
                                                                   b"crashed-recently"]
    store.close()


def test_finish_counts_a_batch_once_and_expires_log_streams_only_of_jobs_that_logged(
        redis_url: str, redis_client: redis.Redis) -> None:
    store = _store(redis_url)
    for i in range(3):
        store.enqueue(PreparedJob("default", f"default-{i:032x}", "echo", json.dumps(i), 1000))
    jobs, _ = store.claim("default", "sup-a", 3)
    for job in jobs:  # a stream for each, as if every job had logged
        redis_client.xadd(K.job_log(job.id), {"line": "{}"})
    recorded = store.finish("default", "sup-a", [
        Settlement(jobs[0].id, Status.COMPLETED, "1"),
        Settlement(jobs[1].id, Status.COMPLETED, "2"),
        Settlement(jobs[2].id, Status.FAILED, "{}"),
    ], logged={jobs[0].id})
    assert recorded == 3
    stats = redis_client.hgetall(K.stats("default"))
    assert stats[b"completed"] == b"2" and stats[b"failed"] == b"1"
    rate = redis_client.hvals(K.rate("default"))
    assert sum(int(v.split(b":")[1]) for v in rate) == 3
    assert redis_client.pttl(K.job_log(jobs[0].id)) > 0
    assert redis_client.pttl(K.job_log(jobs[1].id)) == -1  # the flag said: no lines
    assert redis_client.lrange(K.failures("default"), 0, -1) == [jobs[2].id.encode()]
    store.close()
