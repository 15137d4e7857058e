"""The dashboard's actions and guard, under a real uvicorn (asgi_app) and a real waitress
(wsgi_app) alike: read-only refuses every POST, a POST needs the CSRF token and a
confirmation, authorize() and basic auth guard every route, and each action really
changes the job or queue in Redis."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest

from sandboxrunner import JobFailed
from sandboxrunner.dashboard import asgi_app, wsgi_app
from sandboxrunner.keys import Keys
from tests.deployments import raw_client
from tests.supervisors import client_for, make_config, running_supervisor, wait_for
from tests.webservers import Http, serve_asgi, serve_wsgi

SERVERS = {"asgi": (asgi_app, serve_asgi), "wsgi": (wsgi_app, serve_wsgi)}


@pytest.fixture(params=sorted(SERVERS))
def served(request: pytest.FixtureRequest, redis_url: str
           ) -> Callable[..., AbstractContextManager[Http]]:
    """A factory: the dashboard with some settings under uvicorn or waitress."""
    make_app, serve = SERVERS[request.param]

    def start(**settings: Any) -> AbstractContextManager[Http]:
        from contextlib import contextmanager

        @contextmanager
        def running() -> Iterator[Http]:
            with serve(make_app(config=make_config(redis_url), refresh_s=0.2,
                                **settings)) as base:
                yield Http(base)

        return running()

    return start


def _failed_job(redis_url: str) -> str:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("fail", {"card": "1111"})
        with pytest.raises(JobFailed):
            handle.result(wait_timeout=10_000)
        return handle.id


def _token(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _status(redis_url: str, job_id: str) -> str:
    with raw_client(redis_url) as r:
        return (r.hget(Keys().job(job_id), "status") or b"").decode()


def test_read_only_offers_no_action_and_refuses_a_forged_post(redis_url: str,
                                                              served: Any) -> None:
    job_id = _failed_job(redis_url)
    with served() as http:
        page = http.get(f"/jobs/{job_id}").text
        assert "<form method=\"post\"" not in page and 'id="retry"' not in page
        assert "<form method=\"post\"" not in http.get("/queues/default").text
        token = http.cookie("sr_csrf") or "x" * 43
        for path in (f"/jobs/{job_id}/retry", "/queues/default/pause",
                     "/queues/default/retry-failed"):
            reply = http.post(path, {"csrf": token, "confirmed": "1"})
            assert reply.status == 403 and "read-only" in reply.text
    assert _status(redis_url, job_id) == "failed"
    with raw_client(redis_url) as r:
        assert not r.exists(Keys().paused("default"))


def test_a_post_without_the_pages_csrf_token_changes_nothing(redis_url: str,
                                                             served: Any) -> None:
    job_id = _failed_job(redis_url)
    with served(read_only=False) as http:
        http.get(f"/jobs/{job_id}")  # the cookie is set
        for form in ({"confirmed": "1"}, {"csrf": "y" * 43, "confirmed": "1"}):
            reply = http.post(f"/jobs/{job_id}/retry", form)
            assert reply.status == 403 and "CSRF" in reply.text
        stranger = Http(http.base)  # another browser: no cookie
        reply = stranger.post(f"/jobs/{job_id}/retry", {"csrf": http.cookie("sr_csrf"),
                                                       "confirmed": "1"})
        assert reply.status == 403
        other_site = Http(http.base, {"origin": "http://evil.example"})
        other_site.cookies = http.cookies
        reply = other_site.post(f"/jobs/{job_id}/retry", {"csrf": http.cookie("sr_csrf"),
                                                         "confirmed": "1"})
        assert reply.status == 403
    assert _status(redis_url, job_id) == "failed"


def test_retry_asks_to_confirm_then_runs_the_failed_job_again(redis_url: str,
                                                              served: Any) -> None:
    job_id = _failed_job(redis_url)
    with served(read_only=False) as http:
        page = http.get(f"/jobs/{job_id}").text
        assert 'id="retry"' in page and 'id="cancel"' not in page
        confirm = http.post(f"/jobs/{job_id}/retry", {"csrf": _token(page)})
        assert confirm.status == 200 and 'id="confirm"' in confirm.text
        assert _status(redis_url, job_id) == "failed"  # asked, not done
        done = http.post(f"/jobs/{job_id}/retry", {"csrf": _token(confirm.text),
                                                   "confirmed": "1"})
        assert done.status == 200 and "retried" in done.text
    assert _status(redis_url, job_id) == "queued"


def test_cancel_of_a_waiting_job_and_pause_resume_of_a_queue(redis_url: str,
                                                             served: Any) -> None:
    with client_for(redis_url) as client:
        job_id = client.enqueue("echo", {"n": 1}).id
    with served(read_only=False) as http:
        token = _token(http.get(f"/jobs/{job_id}").text)
        done = http.post(f"/jobs/{job_id}/cancel", {"csrf": token, "confirmed": "1"})
        assert done.status == 200 and "cancelled" in done.text
        assert _status(redis_url, job_id) == "cancelled"
        page = http.get("/queues/default").text
        assert 'id="pause"' in page
        http.post("/queues/default/pause", {"csrf": token, "confirmed": "1"})
        with raw_client(redis_url) as r:
            assert r.exists(Keys().paused("default"))
        page = http.get("/queues/default").text
        assert 'id="resume"' in page and 'id="paused"' in page
        http.post("/queues/default/resume", {"csrf": token, "confirmed": "1"})
        with raw_client(redis_url) as r:
            assert not r.exists(Keys().paused("default"))


def test_retry_all_failed_of_a_queue_runs_each_again(redis_url: str, served: Any) -> None:
    ids = [_failed_job(redis_url) for _ in range(3)]
    with served(read_only=False) as http:
        token = _token(http.get("/queues/default").text)
        done = http.post("/queues/default/retry-failed", {"csrf": token, "confirmed": "1"})
        assert "retried 3 failed job(s)" in done.text
    assert [_status(redis_url, i) for i in ids] == ["queued"] * 3


def test_authorize_guards_every_route(redis_url: str, served: Any) -> None:
    allowed = {"yes": False}

    def authorize(request: Any) -> bool:
        return allowed["yes"] or request.headers.get("x-staff") == "1"

    with served(read_only=False, authorize=authorize) as http:
        for path in ("/", "/api/snapshot", "/static/dashboard.css", "/queues/default"):
            assert http.get(path).status == 403, path
        assert http.post("/queues/default/pause", {}).status == 403
        assert Http(http.base, {"x-staff": "1"}).get("/").status == 200


def test_basic_auth_asks_for_the_password(redis_url: str, served: Any) -> None:
    with served(basic_auth=("ops", "s3cret")) as http:
        refused = http.get("/")
        assert refused.status == 401 and "Basic" in refused.headers["www-authenticate"]
        wrong = base64.b64encode(b"ops:nope").decode()
        assert Http(http.base, {"authorization": f"Basic {wrong}"}).get("/").status == 401
        right = base64.b64encode(b"ops:s3cret").decode()
        assert Http(http.base, {"authorization": f"Basic {right}"}).get("/").status == 200


def test_a_mounted_dashboard_links_under_its_route(redis_url: str) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    with client_for(redis_url) as client:
        job_id = client.enqueue("echo", {"n": 1}).id
    app = Starlette(routes=[Mount("/admin/queues", asgi_app(config=make_config(redis_url)))])
    with serve_asgi(app) as base:
        http = Http(base)
        page = http.get("/admin/queues/").text
        assert 'href="/admin/queues/static/dashboard.css"' in page
        assert http.get("/admin/queues/static/dashboard.js").status == 200
        reply = http.get(f"/admin/queues/jobs/{job_id[8:16]}")
        assert reply.status == 303 and reply.headers["location"] == f"/admin/queues/jobs/{job_id}"
        wait_for(lambda: http.get(f"/admin/queues/jobs/{job_id}").status == 200)


def test_a_wsgi_dashboard_under_a_prefix_links_under_it(redis_url: str) -> None:
    dashboard = wsgi_app(config=make_config(redis_url))

    def site(environ: dict[str, Any], start_response: Any) -> Any:
        # as werkzeug's DispatcherMiddleware hands a prefix to a mounted WSGI app
        path = environ.get("PATH_INFO", "")
        if path.startswith("/admin/queues"):
            environ["SCRIPT_NAME"] = "/admin/queues"
            environ["PATH_INFO"] = path[len("/admin/queues"):]
            return dashboard(environ, start_response)
        start_response("404 Not Found", [("content-type", "text/plain")])
        return [b"the app's own 404"]

    with serve_wsgi(site) as base:
        http = Http(base)
        page = http.get("/admin/queues/")
        assert page.status == 200 and 'href="/admin/queues/queues/default"' in page.text
        assert http.get("/admin/queues/static/dashboard.css").status == 200


@pytest.mark.parametrize("settings, expected", [
    ({"basic_auth": ("ops", "")}, "basic_auth: expected (user, password)"),
    ({"refresh_s": 0}, "refresh_s: expected seconds from 0.05 to 60"),
    ({"authorize": "staff"}, "authorize: expected a function"),
    ({"read_only": "no"}, "read_only: expected true or false"),
])
def test_bad_dashboard_arguments_are_one_clear_error(redis_url: str, settings: dict[str, Any],
                                                     expected: str) -> None:
    from sandboxrunner.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(expected)):
        asgi_app(config=make_config(redis_url), **settings)
