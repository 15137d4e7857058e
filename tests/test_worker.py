"""init_worker inside the calling process, the auto-start rule, the web-app helpers and
the production topology (apps only enqueue; dedicated `sandboxrunner start` services)."""

from __future__ import annotations

import asyncio
import logging
import os
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

import sandboxrunner
from sandboxrunner import init_worker
from sandboxrunner.config import load_config
from sandboxrunner.integrations import auto_start_worker, lifespan, make_lifespan
from sandboxrunner.keys import QUEUES, Keys
from sandboxrunner.worker import current_worker, should_auto_start
from tests.supervisors import TEST_JOBS, SupervisorProcess, client_for


def settings(redis_url: str, **extra: Any) -> dict[str, Any]:
    """init_worker keyword arguments for the test server: short leases, test jobs."""
    values = {"redis_url": redis_url, "jobs_dir": str(TEST_JOBS), "lease_ms": 1000,
              "heartbeat_ms": 200, "grace_period": 5000}
    values.update(extra)
    return values


def sr_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("sr-")}


def wait_for(predicate: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def supervisor_in_redis(r: redis.Redis, sid: str) -> bool:
    keys = Keys("sr")
    return (r.exists(keys.supervisor(sid)) > 0
            or r.zscore(keys.supervisors(), sid) is not None
            or any(r.zscore(keys.sups(q), sid) is not None for q in QUEUES))


@pytest.fixture(autouse=True)
def no_worker_left() -> Iterator[None]:
    """Every test starts and ends without an in-process worker."""
    assert current_worker() is None
    yield
    worker = current_worker()
    if worker is not None:
        worker.stop(grace_ms=1000)
        pytest.fail("the test left an in-process worker running")


# --------------------------------------------------------------------------- init_worker


def test_init_worker_serves_run_job_from_the_same_process_then_stops_cleanly(
        redis_url: str, redis_client: redis.Redis) -> None:
    before = sr_threads()
    worker = init_worker(**settings(redis_url))
    assert worker.running and current_worker() is worker
    assert supervisor_in_redis(redis_client, worker.supervisor.sid)

    assert sandboxrunner.run_job("echo", {"n": 1})["echo"] == {"n": 1}
    assert sandboxrunner.run_job("urgent", 2)["urgent"] == 2  # both queues are served

    worker.stop()
    assert not worker.running and current_worker() is None
    assert not supervisor_in_redis(redis_client, worker.supervisor.sid)
    wait_for(lambda: not {t for t in sr_threads() - before if t.is_alive()})
    worker.stop()  # a second stop is harmless


def test_a_second_init_worker_returns_the_running_handle(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    first = init_worker(**settings(redis_url))
    try:
        assert init_worker(**settings(redis_url)) is first
        with caplog.at_level(logging.WARNING, logger="sandboxrunner.worker"):
            assert init_worker(**settings(redis_url, concurrency=3)) is first
        assert "different settings" in caplog.text and "concurrency" in caplog.text
        assert first.config.concurrency is None  # the running worker is unchanged
    finally:
        first.stop()

    second = init_worker(**settings(redis_url))  # after stop, a fresh one starts
    try:
        assert second is not first and second.running
        assert second.supervisor.sid != first.supervisor.sid
        assert sandboxrunner.run_job("echo", 3)["echo"] == 3
    finally:
        second.stop()


def test_a_second_init_worker_says_what_a_worker_started_without_settings_keeps(
        redis_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SANDBOXRUNNER_JOBS_DIR", str(TEST_JOBS))
    first = init_worker()  # its settings come from the environment and config alone
    try:
        with caplog.at_level(logging.WARNING, logger="sandboxrunner.worker"):
            assert init_worker(concurrency=3) is first
            assert init_worker() is first  # asks for no settings: nothing to warn about
    finally:
        first.stop()
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "concurrency" in warning and "keeps the settings it started with" in warning
    assert "{}" not in warning


def test_init_worker_is_a_context_manager(redis_url: str, redis_client: redis.Redis) -> None:
    with init_worker(**settings(redis_url)) as worker:
        assert sandboxrunner.run_job("echo", "ctx")["echo"] == "ctx"
        sid = worker.supervisor.sid
    assert not worker.running
    assert not supervisor_in_redis(redis_client, sid)


def test_init_worker_with_separate_processes_runs_jobs_in_its_own_children(
        redis_url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs.txt"
    me = psutil.Process()
    with init_worker(**settings(redis_url, use_separate_process=True, concurrency=1,
                                workers="default")):
        result = sandboxrunner.run_job("record", {"file": str(runs)})
        assert result["pid"] != os.getpid()
        assert result["pid"] in {c.pid for c in me.children(recursive=True)}
    # stopping the worker took its pool down with it
    wait_for(lambda: not psutil.pid_exists(result["pid"]))


def test_a_forked_child_does_not_inherit_the_running_worker(redis_url: str) -> None:
    with init_worker(**settings(redis_url)) as worker:
        pid = os.fork()
        if pid == 0:  # the child: no supervisor threads came along, so no worker either
            os._exit(0 if current_worker() is None and not worker.running else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert current_worker() is worker and worker.running


def test_an_asyncio_app_uses_arun_job_on_its_in_process_worker(redis_url: str) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def app() -> tuple[list[Any], int]:
        nonlocal ticks
        # starting blocks (imports, Redis, threads): off the loop, as the lifespan does
        worker = await asyncio.to_thread(init_worker, **settings(redis_url))
        async with worker:
            results = await asyncio.gather(
                *(sandboxrunner.arun_job("async_echo", i) for i in range(20)),
                sandboxrunner.arun_job("echo", "sync handler"))
            # a job running as the worker stops: the drain waits for it
            slow = asyncio.create_task(sandboxrunner.arun_job("slow", {"seconds": 0.3}))
            await asyncio.sleep(0.1)
            tick_task = asyncio.create_task(ticker())
            ticks = 0
        ticks_while_stopping = ticks  # astop drained on a thread; the loop kept running
        tick_task.cancel()
        assert (await slow)["slept"] == 0.3
        assert not worker.running
        return results, ticks_while_stopping

    results, ticks_while_stopping = asyncio.run(app())
    assert [r["async_echo"] for r in results[:20]] == list(range(20))
    assert results[20]["echo"] == "sync handler"
    assert ticks_while_stopping > 0


# --------------------------------------------------------------------------- auto-start rule

# (auto_start, auto_start_production, environment) -> starts?  Written out, not computed.
AUTO_START_MATRIX = [
    (True, True, "development", True),
    (True, True, "production", True),
    (True, False, "development", True),
    (True, False, "production", False),
    (False, True, "development", False),
    (False, True, "production", False),
    (False, False, "development", False),
    (False, False, "production", False),
]


@pytest.mark.parametrize("auto_start,auto_start_production,environment,starts",
                         AUTO_START_MATRIX)
@pytest.mark.parametrize("how", ["environment", "overrides"])
def test_auto_start_matrix(auto_start: bool, auto_start_production: bool, environment: str,
                           starts: bool, how: str, tmp_path: Path) -> None:
    def word(flag: bool) -> str:
        return "true" if flag else "false"

    if how == "environment":  # SANDBOXRUNNER_ENV and SANDBOXRUNNER_AUTO_START*
        env = {"SANDBOXRUNNER_AUTO_START": word(auto_start),
               "SANDBOXRUNNER_AUTO_START_PRODUCTION": word(auto_start_production),
               "SANDBOXRUNNER_ENV": environment}
        config = load_config({}, project_dir=tmp_path, env=env)
    else:  # init_worker keyword arguments, production as `--production` sets it
        config = load_config({"auto_start": auto_start,
                              "auto_start_production": auto_start_production,
                              "production": environment == "production"},
                             project_dir=tmp_path, env={})
    assert config.production is (environment == "production")
    assert should_auto_start(config) is starts


def test_auto_start_defaults_start_in_every_environment(tmp_path: Path) -> None:
    for env in ({}, {"SANDBOXRUNNER_ENV": "development"}, {"SANDBOXRUNNER_ENV": "production"}):
        assert should_auto_start(load_config({}, project_dir=tmp_path, env=env))


def test_auto_start_production_false_set_in_pyproject_only_stops_production(
        tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.sandboxrunner]\nauto_start_production = false\n")
    dev = load_config({}, project_dir=tmp_path, env={})
    prod = load_config({}, project_dir=tmp_path, env={"SANDBOXRUNNER_ENV": "production"})
    assert should_auto_start(dev) and not should_auto_start(prod)


# --------------------------------------------------------------------------- integrations


def test_auto_start_worker_starts_only_where_auto_start_applies(
        redis_url: str, redis_client: redis.Redis) -> None:
    assert auto_start_worker(**settings(redis_url, auto_start=False)) is None
    assert auto_start_worker(**settings(redis_url, production=True,
                                        auto_start_production=False)) is None
    assert current_worker() is None
    assert redis_client.zcard(Keys("sr").supervisors()) == 0

    worker = auto_start_worker(**settings(redis_url))
    assert worker is not None and worker is current_worker()
    try:
        assert sandboxrunner.run_job("echo", "wsgi")["echo"] == "wsgi"
    finally:
        worker.stop()


def test_lifespan_runs_the_worker_around_an_asgi_app(redis_url: str,
                                                     redis_client: redis.Redis) -> None:
    async def serve(factory: Any) -> Any:
        async with factory(object()):  # what Starlette/FastAPI do with `lifespan=`
            worker = current_worker()
            result = await sandboxrunner.arun_job("async_echo", "asgi") if worker else None
        return worker, result

    worker, result = asyncio.run(serve(make_lifespan(**settings(redis_url))))
    assert worker is not None and result == {"async_echo": "asgi"}
    assert not worker.running and current_worker() is None
    assert not supervisor_in_redis(redis_client, worker.supervisor.sid)

    worker, _ = asyncio.run(serve(make_lifespan(**settings(redis_url, auto_start=False))))
    assert worker is None
    assert callable(lifespan)  # the ready-made one: FastAPI(lifespan=integrations.lifespan)


# --------------------------------------------------------------------------- topology

WHOAMI = """
    import os

    def run(data):
        return {"pid": os.getpid()}
"""


def test_apps_enqueue_while_dedicated_services_serve_each_queue(
        redis_url: str, tmp_path: Path) -> None:
    jobs = tmp_path / "worker_jobs"
    jobs.mkdir()
    (jobs / "whoami.py").write_text(textwrap.dedent(WHOAMI))
    (jobs / "whoami_priority.py").write_text(
        textwrap.dedent(WHOAMI) + '\nworker = "priority"\n')

    # the app process: auto-start off, so it only enqueues
    assert auto_start_worker(**settings(redis_url, jobs_dir=str(jobs), auto_start=False)) is None
    services = {
        "default": SupervisorProcess(redis_url, WORKERS="default",
                                     SANDBOXRUNNER_JOBS_DIR=str(jobs)),
        "priority": SupervisorProcess(redis_url, ["--production"], WORKERS="priority",
                                      SANDBOXRUNNER_JOBS_DIR=str(jobs),
                                      SANDBOXRUNNER_AUTO_START="false"),
    }
    try:
        for queue, service in services.items():
            service.wait_ready((queue,))
        with client_for(redis_url, jobs_dir=str(jobs), auto_start=False) as app:
            handles = [app.enqueue(name) for name in ("whoami", "whoami_priority") * 5]
            pids = [h.result(wait_timeout=10_000)["pid"] for h in handles]
        assert set(pids[0::2]) == {services["default"].proc.pid}
        assert set(pids[1::2]) == {services["priority"].proc.pid}
        assert os.getpid() not in pids
    finally:
        for service in services.values():
            service.stop()


def test_sandboxrunner_start_serves_even_where_auto_start_is_off_in_production(
        redis_url: str) -> None:
    service = SupervisorProcess(redis_url, ["--production"],
                                SANDBOXRUNNER_AUTO_START="false",
                                SANDBOXRUNNER_AUTO_START_PRODUCTION="false")
    try:
        service.wait_ready(QUEUES)
        with client_for(redis_url) as client:
            assert client.run_job("echo", "prod", wait_timeout=10_000)["echo"] == "prod"
    finally:
        service.stop()
