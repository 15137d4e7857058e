"""Process titles: in `ps`, a supervisor started by `sandboxrunner start`, its fork server
and each child of its pool say what they are and what they run; an in-process worker
leaves the app's own title alone and titles only its fork server and children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sandboxrunner import enqueue, init_worker
from tests.supervisors import ROOT, client_for, wait_for

NAP = """
    import time

    def run(data, ctx):
        time.sleep(data["seconds"])
        return "rested"
"""


def title(pid: int) -> str:
    """What `ps -o args` shows for PID."""
    return " ".join(psutil.Process(pid).cmdline()).strip()


def child_pids(pid: int) -> list[int]:
    return [c.pid for c in psutil.Process(pid).children()]


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A project folder named shop, with one job."""
    project = tmp_path / "shop"
    (project / "worker_jobs").mkdir(parents=True)
    (project / "worker_jobs" / "nap.py").write_text(textwrap.dedent(NAP))
    return project


@pytest.fixture
def start(redis_url: str, shop: Path) -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []

    def run(*args: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXRUNNER_")}
        env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
        started.append(subprocess.Popen([sys.executable, "-m", "sandboxrunner", "start", *args],
                                        cwd=shop, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, text=True))
        return started[-1]

    try:
        yield run
    finally:
        for proc in started:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_a_process_supervisor_and_its_children_say_what_they_run(
        redis_url: str, shop: Path, start: object) -> None:
    supervisor = start("--separate-process", "-c", "1", "--workers", "default")  # type: ignore[operator]
    wait_for(lambda: title(supervisor.pid) == "sandboxrunner supervisor default (processes) "
             "[shop]" and len(child_pids(supervisor.pid)) == 1, timeout_s=20,
             what="the supervisor's title and its fork server")
    server = child_pids(supervisor.pid)[0]
    # a fork server just forked still bears its parent's title for a moment
    wait_for(lambda: title(server) == "sandboxrunner fork server default [shop]",
             what="the fork server's title")
    child = wait_for(lambda: child_pids(server), what="the child")[0]
    wait_for(lambda: title(child) == "sandboxrunner child default: idle", what="an idle child")
    with client_for(redis_url, jobs_dir=str(shop / "worker_jobs")) as client:
        handle = client.enqueue("nap", {"seconds": 1})
        wait_for(lambda: title(child) == f"sandboxrunner child default: running nap {handle.id}",
                 what="the child's title naming its job")
        assert handle.result(wait_timeout=10_000) == "rested"
    wait_for(lambda: title(child) == "sandboxrunner child default: idle", what="idle again")


def test_a_thread_supervisor_names_its_queues_mode_and_project(
        shop: Path, start: object) -> None:
    supervisor = start()  # type: ignore[operator]
    wait_for(lambda: title(supervisor.pid) ==
             "sandboxrunner supervisor default,priority (threads) [shop]", timeout_s=20,
             what="the supervisor's title")


def test_an_in_process_worker_titles_its_children_but_not_the_app(redis_url: str,
                                                                  shop: Path) -> None:
    before = title(os.getpid())
    with init_worker(redis_url=redis_url, jobs_dir=str(shop / "worker_jobs"),
                     workers="default", use_separate_process=True, concurrency=1) as worker:
        assert enqueue("nap", {"seconds": 0}).result(wait_timeout=10_000) == "rested"
        pool = worker.supervisor.executors["default"].snapshot()["children"]
        wait_for(lambda: [title(c["pid"]) for c in pool] == ["sandboxrunner child default: idle"],
                 what="the pool's child titled")
        server = psutil.Process(pool[0]["pid"]).ppid()
        assert title(server) == f"sandboxrunner fork server default [{ROOT.name}]"
        assert title(os.getpid()) == before
