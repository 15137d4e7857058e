"""Job durations: the finish script records each reported attempt in its job name's
histogram (no extra round trip), the store reads them back typed and bounded, and a hash
holding NAMES_MAX names takes no new one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from sandboxrunner import JobFailed
from sandboxrunner.durations import BUCKETS_MS, NAMES_MAX
from sandboxrunner.keys import Keys
from tests.deployments import every_deployment
from tests.supervisors import MODES, client_for, running_supervisor

K = Keys("sr")


@every_deployment
@pytest.mark.parametrize("mode", list(MODES))
def test_each_attempt_is_observed_in_its_job_names_buckets(redis_url: str, mode: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        for _ in range(3):
            client.run_job("echo", 1)
        client.run_job("slow", {"seconds": 0.12})
        with pytest.raises(JobFailed):
            client.run_job("fail", {"card": "x"}, retries=1)  # two attempts, both observed
        durations = client.store.read_durations()
    echo, slow, fail = (durations.of("default", n) for n in ("echo", "slow", "fail"))
    assert echo and slow and fail
    assert (echo.count, slow.count, fail.count) == (3, 1, 2)
    assert echo.cumulative[BUCKETS_MS.index(100)] == 3  # an echo takes well under 100 ms
    # 120 ms of sleep: above the 100 ms bucket, and within 1 s
    assert slow.cumulative[BUCKETS_MS.index(100)] == 0
    assert slow.cumulative[BUCKETS_MS.index(1000)] == 1
    assert 120 <= slow.sum_ms < 1000
    assert len(slow.cumulative) == len(BUCKETS_MS) + 1
    assert durations.of("priority", "echo") is None


def test_a_hash_holding_names_max_names_takes_no_new_name(
        redis_url: str, redis_client: redis.Redis) -> None:
    key = K.durations("default")
    with running_supervisor(redis_url), client_for(redis_url) as client:
        client.run_job("echo", 1)
        redis_client.hset(key, "#names", NAMES_MAX)  # as if NAMES_MAX names were there
        client.run_job("echo", 2)  # a name it holds still counts
        client.run_job("slow", {"seconds": 0})  # a new one does not
        durations = client.store.read_durations()
    echo = durations.of("default", "echo")
    assert echo and echo.count == 2
    assert durations.of("default", "slow") is None
    assert int(redis_client.hget(key, "#names")) == NAMES_MAX
    assert not [f for f in redis_client.hkeys(key) if f.startswith(b"slow:")]


def test_the_finish_script_spells_the_buckets_and_the_cap_as_durations_py_does() -> None:
    source = (Path(__file__).parent.parent / "sandboxrunner/scripts/finish.lua").read_text()
    bounds = re.search(r"DURATION_BUCKETS_MS = \{([^}]*)\}", source)
    cap = re.search(r"DURATION_NAMES_MAX = (\d+)", source)
    assert bounds and cap
    assert tuple(int(b) for b in bounds.group(1).split(",")) == BUCKETS_MS
    assert int(cap.group(1)) == NAMES_MAX


def test_reading_durations_costs_one_command_per_queue(
        redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.hset(K.durations("default"), mapping={
        "echo:5": 2, "echo:inf": 1, "echo:sum": 4000, "bad": 1, "echo:oops": 3,
        "#names": 1})
    with client_for(redis_url) as client:
        redis_client.config_resetstat()
        durations = client.store.read_durations()
        stats = redis_client.info("commandstats")
    (echo,) = durations.histograms
    assert echo.cumulative[0] == 2 and echo.count == 3 and echo.sum_ms == 4000
    assert stats["cmdstat_hgetall"]["calls"] == 2  # default and priority
