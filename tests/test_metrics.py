"""/metrics' body: built by prometheus_client from one snapshot and the duration
histograms, it parses with prometheus_client's own parser and its numbers are what ran."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from sandboxrunner import JobFailed
from sandboxrunner.client import Client
from sandboxrunner.dashboard.metrics import metrics_text
from sandboxrunner.durations import BUCKETS_MS
from sandboxrunner.keys import Keys
from sandboxrunner.queue_control import pause
from sandboxrunner.snapshot import SnapshotReader
from tests.supervisors import MODES, client_for, make_config, running_supervisor, wait_for

K = Keys("sr")


def _scrape(redis_url: str) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float],
                                     dict[str, Any], str]:
    """The samples of one scrape ((name, sorted labels) -> value), its families by name,
    and its content type."""
    reader = SnapshotReader(make_config(redis_url), redis_url)
    try:
        body, content_type = metrics_text(reader.read(), reader.read_durations())
    finally:
        reader.close()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    return samples, families, content_type


def _children_shown(redis_url: str) -> int:
    reader = SnapshotReader(make_config(redis_url), redis_url)
    try:
        return sum(len(s.children) for s in reader.read().supervisors)
    finally:
        reader.close()


def run_the_workload(client: Client) -> None:
    """Three echoes, one slow run of 120 ms, one job failed after a retry; two delayed."""
    for i in range(3):
        client.run_job("echo", i)
    client.run_job("slow", {"seconds": 0.12})
    with pytest.raises(JobFailed):
        client.run_job("fail", {"card": "x"}, retries=1)
    client.enqueue("echo", 1, delay=60_000)
    client.enqueue("echo", 2, delay=60_000)


def assert_the_workload_shows(value: Callable[..., float]) -> None:
    """What `run_the_workload` leaves in the metrics, VALUE(name, **labels) reading them:
    the counters of the default queue and the durations (in seconds) of its jobs."""
    assert value("sandboxrunner_jobs_completed_total", queue="default") == 4
    assert value("sandboxrunner_jobs_failed_total", queue="default") == 1
    assert value("sandboxrunner_jobs_retried_total", queue="default") == 1
    assert value("sandboxrunner_jobs_delayed", queue="default") == 2
    # three echoes, one slow run of 120 ms, two failed attempts
    duration = "sandboxrunner_job_duration_seconds"
    assert value(f"{duration}_count", queue="default", job="echo") == 3
    assert value(f"{duration}_count", queue="default", job="fail") == 2
    assert value(f"{duration}_bucket", queue="default", job="slow", le="0.1") == 0
    assert value(f"{duration}_bucket", queue="default", job="slow", le="1.0") == 1
    assert 0.12 <= value(f"{duration}_sum", queue="default", job="slow") < 1


@pytest.mark.parametrize("mode", list(MODES))
def test_the_text_parses_and_its_numbers_are_what_ran(redis_url: str, mode: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        run_the_workload(client)
        pause("priority")
        client.enqueue("urgent", 1)
        if mode == "processes":
            wait_for(lambda: _children_shown(redis_url) == 4, what="the supervisor's "
                     "snapshot to show its four children")
        samples, families, content_type = _scrape(redis_url)
    assert content_type.startswith("text/plain; version=")

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert_the_workload_shows(value)
    assert value("sandboxrunner_jobs_waiting", queue="priority") == 1
    assert value("sandboxrunner_jobs_waiting", queue="default") == 0
    assert value("sandboxrunner_jobs_active", queue="default") == 0
    assert value("sandboxrunner_jobs_throttled", queue="default") == 0
    assert value("sandboxrunner_queue_paused", queue="priority") == 1
    assert value("sandboxrunner_queue_paused", queue="default") == 0
    assert value("sandboxrunner_supervisors", state="live") == 1
    assert value("sandboxrunner_supervisors", state="gone") == 0
    duration = "sandboxrunner_job_duration_seconds"
    assert families[duration].type == "histogram"
    assert value(f"{duration}_bucket", queue="default", job="slow", le="+Inf") == 1
    les = [dict(labels)["le"] for name, labels in samples
           if name == f"{duration}_bucket" and dict(labels)["job"] == "echo"]
    assert len(les) == len(BUCKETS_MS) + 1
    children = value("sandboxrunner_children", queue="default")
    if mode == "processes":
        assert children == 2 and value("sandboxrunner_children", queue="priority") == 2
        assert value("sandboxrunner_children_rss_bytes", queue="default") > 1_000_000
        assert value("sandboxrunner_children_cpu_percent", queue="default") >= 0
    else:
        assert children == 0


def test_names_read_from_redis_are_escaped_by_the_library(
        redis_url: str, redis_client: redis.Redis) -> None:
    odd = 'we"ird\\name\n}'
    redis_client.hset(K.durations("default"), mapping={f"{odd}:5": 1, f"{odd}:sum": 3})
    samples, _, _ = _scrape(redis_url)
    assert samples[("sandboxrunner_job_duration_seconds_count",
                    (("job", odd), ("queue", "default")))] == 1
