"""`sandboxrunner dashboard` as a user runs it: a subprocess in a fresh folder, a real
server on a free port, real HTTP requests; the refusals as one error line and an exit
code. And `[tool.sandboxrunner.dashboard]` picked up by integrations.lifespan."""

from __future__ import annotations

import base64
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from sandboxrunner import errors
from tests.clirun import CLI, cli_env, no_server_left_in, one_error_line, project_with, run_cli
from tests.webservers import Http, free_port


@contextmanager
def dashboard_process(cwd: Path, *args: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    proc = subprocess.Popen([*CLI, "dashboard", "--port", str(port), *args], cwd=cwd,
                            env=cli_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                Http(base).get("/static/dashboard.css")
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()


def test_it_serves_the_dashboard_on_loopback(redis_url: str, tmp_path: Path) -> None:
    project = project_with(tmp_path, {})
    with dashboard_process(project, REDIS_URL=redis_url) as (base, proc):
        page = Http(base).get("/")
        assert page.status == 200 and 'id="queues"' in page.text
        assert Http(base).post("/queues/default/pause", {}).status == 403  # read-only
    assert proc.returncode == 0


def test_a_non_loopback_bind_without_auth_refuses_naming_the_flag(redis_url: str,
                                                                  tmp_path: Path) -> None:
    project = project_with(tmp_path, {})
    done = run_cli(["dashboard", "--host", "0.0.0.0"], project, REDIS_URL=redis_url)
    line = one_error_line(done)
    assert done.returncode == errors.EXIT_CONFIG
    assert "0.0.0.0" in line and "--allow-no-auth" in line
    assert "SANDBOXRUNNER_DASHBOARD_PASSWORD" in line


def test_basic_auth_from_the_environment_guards_a_public_bind(redis_url: str,
                                                              tmp_path: Path) -> None:
    project = project_with(tmp_path, {})
    env = {"REDIS_URL": redis_url, "SANDBOXRUNNER_DASHBOARD_USER": "ops",
           "SANDBOXRUNNER_DASHBOARD_PASSWORD": "pa55"}
    with dashboard_process(project, "--host", "0.0.0.0", **env) as (base, _):
        assert Http(base).get("/").status == 401
        token = base64.b64encode(b"ops:pa55").decode()
        assert Http(base, {"authorization": f"Basic {token}"}).get("/").status == 200


def test_actions_come_from_pyproject_read_only_false(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.sandboxrunner.dashboard]
        read_only = false
    """))
    with dashboard_process(tmp_path, REDIS_URL=redis_url) as (base, _):
        http = Http(base)
        assert 'id="pause"' in http.get("/queues/default").text


@pytest.mark.parametrize("table, expected", [
    ("rout = '/x'", "unknown key rout (did you mean route?)"),
    ("read_only = 'yes'", "read_only: expected true or false"),
    ("route = 'admin'", "route: expected a path starting with /"),
])
def test_a_bad_dashboard_table_is_one_line_naming_the_key(tmp_path: Path, table: str,
                                                          expected: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.sandboxrunner.dashboard]\n{table}\n")
    done = run_cli(["dashboard"], tmp_path, REDIS_URL="redis://127.0.0.1:1")
    assert expected in one_error_line(done) and done.returncode == errors.EXIT_CONFIG


def test_no_redis_is_one_line_and_exit_4(tmp_path: Path) -> None:
    project = project_with(tmp_path, {})
    with no_server_left_in(project):
        done = run_cli(["dashboard"], project)
    assert "no embedded server runs" in one_error_line(done)
    assert done.returncode == errors.EXIT_REDIS


def test_the_lifespan_mounts_the_dashboard_at_the_configured_route(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.applications import Starlette

    from sandboxrunner.integrations import make_lifespan

    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.sandboxrunner]
        auto_start = false
        [tool.sandboxrunner.dashboard]
        route = "/admin/queues"
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis_url)
    app = Starlette(lifespan=make_lifespan())
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        http = Http(f"http://127.0.0.1:{config.port}")
        page = http.get("/admin/queues/")
        assert page.status == 200 and 'id="queues"' in page.text
        assert http.get("/admin/queues/api/snapshot").status == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_port_in_use_is_one_line_naming_the_flag(redis_url: str, tmp_path: Path) -> None:
    import socket

    project = project_with(tmp_path, {})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(["dashboard", "--port", str(port)], project, REDIS_URL=redis_url)
    line = one_error_line(done)
    assert f"127.0.0.1:{port}" in line and "--port" in line
    assert done.returncode == errors.EXIT_CONFIG
