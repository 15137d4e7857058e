"""The dashboard's delete and run-now actions, under a real uvicorn and a real waitress:
delete is offered on a settled or not-yet-running job's page (never on a running one's),
asks to confirm, removes the job and links back to its queue; each cron row of the
overview has a run-now button that enqueues the job as its next tick would and links to
the new job; a refusal (a running job, a singleton in flight, no such schedule) is one
line on the page, never a traceback; read-only refuses both with 403."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from sandboxrunner.dashboard import asgi_app, wsgi_app
from sandboxrunner.keys import Keys
from tests.deployments import raw_client
from tests.supervisors import client_for, make_config, running_supervisor, wait_for
from tests.test_cron import cron_job, runs_of
from tests.test_dashboard_actions import _failed_job, _status, _token
from tests.webservers import Http, serve_asgi, serve_wsgi

SERVERS = {"asgi": (asgi_app, serve_asgi), "wsgi": (wsgi_app, serve_wsgi)}
Served = Callable[..., AbstractContextManager[Http]]


@pytest.fixture(params=sorted(SERVERS))
def served(request: pytest.FixtureRequest, redis_url: str) -> Served:
    """A factory: the dashboard under uvicorn or waitress, with SETTINGS and, given
    JOBS_DIR, that folder's job files (run-now prepares a cron job's run from them)."""
    make_app, serve = SERVERS[request.param]

    @contextmanager
    def start(jobs_dir: Path | None = None, **settings: Any) -> Iterator[Http]:
        overrides = {"jobs_dir": str(jobs_dir)} if jobs_dir else {}
        app = make_app(config=make_config(redis_url, **overrides), refresh_s=0.2, **settings)
        with serve(app) as base:
            yield Http(base)

    return start


def _confirmed(http: Http, path: str, page: str) -> Any:
    """POST PATH from PAGE's form, then confirm it; the reply of the confirmation."""
    confirm = http.post(path, {"csrf": _token(page)})
    assert confirm.status == 200 and 'id="confirm"' in confirm.text, confirm.text
    return http.post(path, {"csrf": _token(confirm.text), "confirmed": "1"})


def _one_line(reply: Any) -> str:
    """The message of an error or done page, checked to be one line and no traceback."""
    assert "Traceback" not in reply.text
    found = re.search(r'<p class="[^"]*" id="(?:done|error)">([^<]*)</p>', reply.text)
    assert found, reply.text
    assert "\n" not in found.group(1)
    return found.group(1)


# -- delete ------------------------------------------------------------------------------


def test_delete_of_a_failed_job_confirms_removes_it_and_links_to_its_queue(
        redis_url: str, served: Served) -> None:
    job_id = _failed_job(redis_url)
    with served(read_only=False) as http:
        page = http.get(f"/jobs/{job_id}").text
        assert 'id="delete"' in page and 'id="retry"' in page
        done = _confirmed(http, f"/jobs/{job_id}/delete", page)
        assert done.status == 200
        assert f"deleted {job_id} (fail, failed)" in _one_line(done)
        assert 'id="back" href="/queues/default">to queue default<' in done.text
        assert http.get(f"/jobs/{job_id}").status == 404
    assert _status(redis_url, job_id) == ""


def test_delete_of_a_waiting_job_dequeues_it(redis_url: str, served: Served) -> None:
    with client_for(redis_url) as client:
        job_id = client.enqueue("echo", {"n": 1}).id
    with served(read_only=False) as http:
        page = http.get(f"/jobs/{job_id}").text
        assert 'id="delete"' in page and 'id="cancel"' in page
        done = _confirmed(http, f"/jobs/{job_id}/delete", page)
        assert "before it ran" in _one_line(done)
    with raw_client(redis_url) as r:
        assert job_id.encode() not in r.lrange(Keys().wait("default"), 0, -1)


def test_a_running_job_offers_no_delete_and_a_forged_one_is_one_line(
        redis_url: str, served: Served) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("slow", {"seconds": 3})
        wait_for(lambda: _status(redis_url, handle.id) == "active", what="the job to start")
        with served(read_only=False) as http:
            page = http.get(f"/jobs/{handle.id}").text
            assert 'id="cancel"' in page and 'id="delete"' not in page
            refused = http.post(f"/jobs/{handle.id}/delete", {"csrf": _token(page),
                                                              "confirmed": "1"})
            assert refused.status == 409
            assert "is running: cancel it first" in _one_line(refused)
            assert _status(redis_url, handle.id) == "active"
            client.cancel(handle.id)


# -- run a cron job now ------------------------------------------------------------------


def test_run_now_from_the_overviews_cron_row_links_to_the_new_job(
        redis_url: str, served: Served, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "new_year", "0 0 1 1 *", out, tag="by hand")
    with running_supervisor(redis_url, jobs_dir=str(jobs)), \
            served(jobs_dir=jobs, read_only=False) as http:
        overview = wait_for(lambda: (page := http.get("/").text) and
                            'id="run-now-new_year"' in page and page,
                            what="the cron row with its button")
        done = _confirmed(http, "/cron/new_year/run-now", overview)
        assert done.status == 200
        line = _one_line(done)
        job_id = re.search(r"(default-[0-9a-f]{32})", line).group(1)
        assert f'id="back" href="/jobs/{job_id}"' in done.text
        wait_for(lambda: runs_of(out), what="the run")
        wait_for(lambda: _status(redis_url, job_id) == "completed", what="it to complete")
        assert '"tag": "by hand"' in http.get(f"/jobs/{job_id}").text.replace("&#34;", '"')


def test_run_now_of_a_singleton_in_flight_or_of_no_schedule_is_one_line(
        redis_url: str, served: Served, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "busy", "0 0 1 1 *", out, extra="singleton = True", seconds=2)
    with running_supervisor(redis_url, jobs_dir=str(jobs)), \
            client_for(redis_url, jobs_dir=str(jobs)) as client, \
            served(jobs_dir=jobs, read_only=False) as http:
        wait_for(lambda: 'id="run-now-busy"' in http.get("/").text, what="the cron row")
        first = client.run_cron_now("busy")
        token = _token(http.get("/").text)
        busy = http.post("/cron/busy/run-now", {"csrf": token, "confirmed": "1"})
        assert busy.status == 409
        assert f"busy is a singleton whose run {first} is still in flight" in _one_line(busy)
        missing = http.post("/cron/nope/run-now", {"csrf": token, "confirmed": "1"})
        assert missing.status == 404 and "nope" in _one_line(missing)
        client.cancel(first)
    assert len(runs_of(out)) <= 1


# -- read-only ---------------------------------------------------------------------------


def test_read_only_offers_neither_and_refuses_a_forged_post(
        redis_url: str, served: Served, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "new_year", "0 0 1 1 *", out)
    job_id = _failed_job(redis_url)
    with running_supervisor(redis_url, jobs_dir=str(jobs)), \
            served(jobs_dir=jobs) as http:
        wait_for(lambda: "new_year" in http.get("/").text, what="the cron row")
        assert "run-now" not in http.get("/").text
        assert 'id="delete"' not in http.get(f"/jobs/{job_id}").text
        token = http.cookie("sr_csrf") or "x" * 43
        for path in (f"/jobs/{job_id}/delete", "/cron/new_year/run-now"):
            reply = http.post(path, {"csrf": token, "confirmed": "1"})
            assert reply.status == 403 and "read-only" in reply.text, path
    assert _status(redis_url, job_id) == "failed"
    assert runs_of(out) == []
