"""/metrics and its JSON twin /api/metrics, served by the dashboard under a real uvicorn
and a real waitress: the text parses with prometheus_client's parser and its numbers are
what ran, the JSON says the same, scrapes share the snapshot and durations read once per
interval, and the guard (basic auth) applies as to every route."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandboxrunner.dashboard import asgi_app, wsgi_app
from sandboxrunner.durations import BUCKETS_MS
from tests.deployments import raw_client
from tests.supervisors import client_for, make_config, running_supervisor
from tests.test_dashboard_cost import _commands
from tests.test_metrics import assert_the_workload_shows, run_the_workload
from tests.webservers import Http, serve_asgi, serve_wsgi

SERVERS = {"asgi": (asgi_app, serve_asgi), "wsgi": (wsgi_app, serve_wsgi)}
AUTH = {"authorization": "Basic " + base64.b64encode(b"prom:s3cret").decode()}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@contextmanager
def _dashboard(redis_url: str, server: str, **settings: Any) -> Iterator[Http]:
    make_app, serve = SERVERS[server]
    with serve(make_app(config=make_config(redis_url), basic_auth=("prom", "s3cret"),
                        **settings)) as base:
        yield Http(base, AUTH)


def _samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _ran(redis_url: str) -> None:
    """Three echoes, one slow run of 120 ms, one job failed after a retry; two delayed."""
    with running_supervisor(redis_url), client_for(redis_url) as client:
        run_the_workload(client)


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_metrics_parse_and_say_what_ran_and_the_json_twin_says_the_same(
        redis_url: str, server: str) -> None:
    _ran(redis_url)
    with _dashboard(redis_url, server) as http:
        reply = http.get("/metrics")
        as_json = http.get("/api/metrics")
    assert reply.status == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=")
    samples = _samples(reply.text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert_the_workload_shows(value)
    assert value("sandboxrunner_supervisors", state="live") == 0  # it stopped
    duration = "sandboxrunner_job_duration_seconds"

    assert as_json.status == 200 and as_json.headers["content-type"] == "application/json"
    doc = json.loads(as_json.text)
    for queue, row in doc["queues"].items():
        for field in ("waiting", "delayed", "active", "throttled"):
            assert row[field] == value(f"sandboxrunner_jobs_{field}", queue=queue)
        for field in ("enqueued", "completed", "failed", "retried", "stalled"):
            assert row[field] == value(f"sandboxrunner_jobs_{field}_total", queue=queue)
        assert row["paused"] == bool(value("sandboxrunner_queue_paused", queue=queue))
        assert row["children"] == value("sandboxrunner_children", queue=queue)
    assert doc["supervisors"] == {state: value("sandboxrunner_supervisors", state=state)
                                  for state in ("live", "late", "gone")}
    durations = doc["job_duration_seconds"]
    assert durations["buckets"] == [ms / 1000 for ms in BUCKETS_MS]
    slow = durations["histograms"]["default"]["slow"]
    assert slow["count"] == 1 and slow["sum"] == value(f"{duration}_sum", queue="default",
                                                       job="slow")
    assert slow["cumulative"][-1] == 1 and len(slow["cumulative"]) == len(BUCKETS_MS) + 1
    assert durations["histograms"]["default"]["echo"]["count"] == 3


def test_scrapes_within_the_interval_cost_redis_nothing_more(redis_url: str) -> None:
    _ran(redis_url)
    with _dashboard(redis_url, "asgi", refresh_s=30) as http, raw_client(redis_url) as r:
        http.get("/metrics")  # the snapshot and the durations, read once
        before = _commands(r)
        for _ in range(5):
            assert http.get("/metrics").status == 200
            assert http.get("/api/metrics").status == 200
        assert _commands(r) - before - 1 == 0  # less the INFO that counted


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_metrics_are_behind_the_guard_like_every_route(redis_url: str, server: str) -> None:
    with _dashboard(redis_url, server) as http:
        stranger = Http(http.base)
        for path in ("/metrics", "/api/metrics"):
            refused = stranger.get(path)
            assert refused.status == 401 and "Basic" in refused.headers["www-authenticate"]
            assert http.get(path).status == 200


def test_a_scrape_while_redis_is_unreachable_is_one_plain_line_and_503() -> None:
    from tests.webservers import free_port

    url = f"redis://:pw@127.0.0.1:{free_port()}/0"  # nothing listens there
    with serve_asgi(asgi_app(config=make_config(url))) as base:
        http = Http(base)
        reply = http.get("/metrics")
        as_json = http.get("/api/metrics")
    assert reply.status == 503 and reply.headers["content-type"].startswith("text/plain")
    assert len(reply.text.strip().splitlines()) == 1 and "127.0.0.1" in reply.text
    assert "pw" not in reply.text and "Traceback" not in reply.text
    assert as_json.status == 503 and "error" in json.loads(as_json.text)
