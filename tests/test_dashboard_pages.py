"""The dashboard's pages and JSON API under a real uvicorn, against a real Redis and a
real supervisor: the overview, a queue's jobs page by page, a job's page and its log,
short ids, errors, escaping, and one shared snapshot read for many viewers."""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sandboxrunner import JobFailed
from sandboxrunner.dashboard import asgi_app
from sandboxrunner.top_render import short_id
from tests.deployments import every_deployment, raw_client
from tests.supervisors import client_for, make_config, running_supervisor, wait_for
from tests.webservers import Http, serve_asgi

XSS = "<img src=x onerror=alert(1)>"


def _with(text: str, part: str) -> str | None:
    return text if part in text else None


@pytest.fixture
def dashboard(redis_url: str) -> Iterator[Http]:
    app = asgi_app(config=make_config(redis_url), refresh_s=0.2)
    with serve_asgi(app) as base:
        yield Http(base)
    app.state.source.close()


def test_the_overview_shows_queues_supervisors_and_a_running_jobs_progress(
        redis_url: str, dashboard: Http) -> None:
    with running_supervisor(redis_url) as sup, client_for(redis_url) as client:
        job_id = client.enqueue("dash_steps", {"steps": 40, "pause_s": 0.05}).id
        page = wait_for(lambda: _with(dashboard.get("/").text, "<progress"),
                        what="a progress bar on the overview")
        assert f"/jobs/{job_id}" in page and short_id(job_id) in page
        assert f"{sup.sid.rsplit('-', 2)[0]}" in page and 'data-state="live"' in page
        assert 'id="queue-default"' in page and 'id="queue-priority"' in page
        fragment = dashboard.get("/fragment/overview")
        assert fragment.status == 200 and "<html" not in fragment.text


@every_deployment
def test_the_api_snapshot_is_the_json_top_prints(redis_url: str, dashboard: Http) -> None:
    reply = dashboard.get("/api/snapshot")
    body = json.loads(reply.text)
    assert reply.status == 200 and set(body) >= {"redis", "queues", "supervisors", "running"}


@every_deployment
def test_a_queue_page_lists_its_waiting_jobs_a_page_at_a_time(redis_url: str,
                                                              dashboard: Http) -> None:
    with client_for(redis_url) as client:  # no supervisor: they wait
        ids = [client.enqueue("echo", {"n": i}).id for i in range(60)]
    first = dashboard.get("/queues/default?status=queued")
    shown = set(re.findall(r"/jobs/(default-[0-9a-f]{32})", first.text))
    assert len(shown) == 50 and shown <= set(ids)
    cursor = re.search(r'id="next" href="[^"]*cursor=([^"]+)"', first.text).group(1)
    second = dashboard.get(f"/queues/default?status=queued&cursor={cursor}")
    rest = set(re.findall(r"/jobs/(default-[0-9a-f]{32})", second.text))
    assert rest == set(ids) - shown and 'id="next"' not in second.text
    api = json.loads(dashboard.get("/api/queues/default/jobs?status=queued&limit=7").text)
    assert len(api["items"]) == 7 and api["cursor"]


def test_a_failed_jobs_page_shows_its_data_error_traceback_and_every_attempt(
        redis_url: str, dashboard: Http) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("fail", {"card": "4242"})
        with pytest.raises(JobFailed):
            handle.result(wait_timeout=10_000)
    page = dashboard.get(f"/jobs/{handle.id}").text
    assert '"card": "4242"' in html.unescape(page)
    assert 'id="status" class="status-failed">failed' in page
    assert "PaymentDeclined" in page and "card 4242 declined" in page
    assert "Traceback (most recent call last)" in page and "attempt-errors" in page
    assert 'id="retry"' not in page  # read-only: no action


@every_deployment
def test_a_job_page_shows_its_result_timings_and_log_lines(redis_url: str,
                                                           dashboard: Http) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("dash_steps", {"steps": 3, "pause_s": 0.01})
        handle.result(wait_timeout=10_000)
    page = dashboard.get(f"/jobs/{handle.id}").text
    assert 'id="result"' in page and "&#34;steps&#34;: 3" in page
    for label in ("enqueued", "started", "ended", "waited", "ran"):
        assert f"<th>{label}</th>" in page
    assert [f"step {i} of 3" in page for i in (1, 2, 3)] == [True] * 3
    log = json.loads(dashboard.get(f"/api/jobs/{handle.id}/log").text)
    assert [line["msg"] for line in log["lines"]] == [f"step {i} of 3" for i in (1, 2, 3)]
    later = dashboard.get(f"/api/jobs/{handle.id}/log?after={log['lines'][0]['id']}")
    assert [line["msg"] for line in json.loads(later.text)["lines"]] == [
        "step 2 of 3", "step 3 of 3"]
    assert json.loads(dashboard.get(f"/api/jobs/{handle.id}").text)["data"] == {
        "steps": 3, "pause_s": 0.01}


def test_a_short_id_leads_to_the_jobs_page_and_an_unknown_one_says_so(
        redis_url: str, dashboard: Http) -> None:
    with client_for(redis_url) as client:
        job_id = client.enqueue("echo", {"n": 1}).id
    for path in (f"/jobs/{short_id(job_id)}", f"/lookup?id={short_id(job_id)}"):
        reply = dashboard.get(path)
        assert reply.status == 303 and reply.headers["location"] == f"/jobs/{job_id}"
    missing = dashboard.get("/jobs/default-" + "0" * 32)
    assert missing.status == 404 and "no job default-000" in missing.text
    nothing = dashboard.get("/lookup?id=ffffffff")
    assert nothing.status == 404 and "no job id starts with 'ffffffff'" in html.unescape(
        nothing.text)
    assert dashboard.get("/queues/nope").status == 404
    bad = dashboard.get("/api/queues/default/jobs?cursor=x")
    assert bad.status == 400 and "cursor" in json.loads(bad.text)["error"]


def test_a_value_holding_html_is_shown_as_text(redis_url: str, dashboard: Http) -> None:
    with client_for(redis_url) as client:
        job_id = client.enqueue("echo", {"note": XSS}).id
    page = dashboard.get(f"/jobs/{job_id}")
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text and XSS not in page.text
    assert "script-src" in page.headers["content-security-policy"] or \
        "default-src 'self'" in page.headers["content-security-policy"]


def test_while_redis_is_down_a_page_says_so_in_one_line_without_the_password(
        tmp_path: Any) -> None:
    url = "redis://:hunter2@127.0.0.1:1/0"
    app = asgi_app(config=make_config(url), refresh_s=0.2)
    with serve_asgi(app) as base:
        for path in ("/", "/jobs/default-" + "0" * 32, "/api/snapshot"):
            reply = Http(base).get(path)
            assert reply.status == 503, (path, reply.text)
            assert "hunter2" not in reply.text and "127.0.0.1:1" in reply.text
            assert "Traceback" not in reply.text


def test_ten_viewers_at_once_cost_one_snapshot_read(redis_url: str) -> None:
    app = asgi_app(config=make_config(redis_url), refresh_s=30)
    with serve_asgi(app) as base, raw_client(redis_url) as r:
        Http(base).get("/")  # connections made, first snapshot read
        before = r.info("commandstats").get("cmdstat_time", {}).get("calls", 0)
        replies: list[int] = []
        threads = [threading.Thread(target=lambda: replies.append(
            Http(base).get("/fragment/overview").status)) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = r.info("commandstats").get("cmdstat_time", {}).get("calls", 0)
    assert replies == [200] * 10 and after == before  # no new read within the interval
    assert app.state.source.shared.reads == 1
    app.state.source.close()


def test_the_overview_charts_jobs_per_second_over_the_minutes_it_watched(
        redis_url: str) -> None:
    app = asgi_app(config=make_config(redis_url), refresh_s=0.1)
    with serve_asgi(app) as base, running_supervisor(redis_url), \
            client_for(redis_url) as client:
        http = Http(base)
        http.get("/")
        for i in range(20):
            client.run_job("echo", {"n": i})
        wait_for(lambda: "<rect" in _chart(http.get("/fragment/overview").text),
                 timeout_s=10, what="a bar in the jobs/s chart")
        history = app.state.source.shared.jobs_per_s_history()
        assert history and max(rate for _, rate in history) > 0
    app.state.source.close()


def _chart(page: str) -> str:
    found = re.search(r'<svg class="chart" id="history".*?</svg>', page, re.S)
    return found.group(0) if found else ""
