"""Thread mode: what a job prints lands in that job's log, as in process mode (source
stdout or stderr), while the prints of every other thread of the process (an app with an
in-process worker, the supervisor) still reach the real stdout untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from sandboxrunner import JobTimeout, enqueue, init_worker
from sandboxrunner.joblog import read_job_log
from sandboxrunner.joboutput import JobStream
from sandboxrunner.store import Store
from tests.supervisors import ROOT, client_for, make_config, running_supervisor, wait_for

JOBS = {
    "chatty": """
        import sys

        def run(data, ctx):
            ctx.log("one", data={"n": 1})
            print("two")
            ctx.log.warn("three")
            print("four", file=sys.stderr)
            print("fi", end="")
            print("ve")
            sys.stdout.write("six\\nseven\\n")
            print("no newline at the end", end="")
            return "logged"
    """,
    "apart": """
        import time

        def run(data, ctx):
            for i in range(5):
                print(f"{data['tag']}-{i}")
                time.sleep(0.01)
            return data["tag"]
    """,
    "async_apart": """
        import asyncio

        async def _helper(tag):
            await asyncio.sleep(0.005)
            print(f"{tag}-task")

        async def run(data, ctx):
            for i in range(5):
                print(f"{data['tag']}-{i}")
                await asyncio.sleep(0.01)
            await asyncio.create_task(_helper(data["tag"]))
            return data["tag"]
    """,
    "leaves_a_task": """
        import asyncio

        async def _later():
            await asyncio.sleep(0.05)
            print("left behind")

        async def run(data, ctx):
            print("in the job")
            run.task = asyncio.create_task(_later())  # kept, so it is not collected
            return "returned"
    """,
    "forks": """
        import os
        import sys
        import warnings

        def run(data, ctx):
            print("in the job")
            with warnings.catch_warnings():  # 3.12+: fork of a multi-threaded process
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # a process the job forked: no log sink runs here
                print("from the forked child")
                sys.stdout.flush()
                os._exit(0)
            os.waitpid(pid, 0)
            return "forked"
    """,
    "outlives": """
        import time

        def run(data, ctx):
            print("before the deadline")
            time.sleep(0.6)
            print("after the deadline")
    """,
}


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "worker_jobs"
    folder.mkdir()
    for name, body in JOBS.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return folder


def log_of(redis_url: str, job_id: str, count: int) -> list[dict[str, Any]]:
    """The job's log lines once there are COUNT of them (they are written in batches)."""
    store = Store(make_config(redis_url), redis_url)

    def lines() -> list[dict[str, Any]]:
        got = [line for _, line in read_job_log(store, job_id)]
        return got if len(got) >= count else []

    try:
        return list(wait_for(lines, what=f"{count} log lines of {job_id}"))
    finally:
        store.close()


def test_prints_of_a_sync_job_become_its_log_lines_in_order(
        redis_url: str, redis_client: redis.Redis, jobs_dir: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    with running_supervisor(redis_url, jobs_dir=str(jobs_dir)), \
            client_for(redis_url, jobs_dir=str(jobs_dir)) as client:
        handle = client.enqueue("chatty")
        assert handle.result(wait_timeout=5000) == "logged"
        got = log_of(redis_url, handle.id, 8)
    assert [(x["msg"], x["level"], x.get("source", "log")) for x in got] == [
        ("one", "info", "log"), ("two", "info", "stdout"), ("three", "warn", "log"),
        ("four", "warn", "stderr"), ("five", "info", "stdout"), ("six", "info", "stdout"),
        ("seven", "info", "stdout"), ("no newline at the end", "info", "stdout")]
    out, err = capfd.readouterr()
    assert "two" not in out.split() and "four" not in err.split()


@pytest.mark.parametrize("job", ["apart", "async_apart"])
def test_jobs_running_at_once_each_get_their_own_prints(
        redis_url: str, redis_client: redis.Redis, jobs_dir: Path, job: str) -> None:
    with running_supervisor(redis_url, jobs_dir=str(jobs_dir)), \
            client_for(redis_url, jobs_dir=str(jobs_dir)) as client:
        handles = {tag: client.enqueue(job, {"tag": tag}) for tag in "abc"}
        for tag, handle in handles.items():
            assert handle.result(wait_timeout=5000) == tag
        expected = [f"{{}}-{i}" for i in range(5)] + (["{}-task"] if job == "async_apart" else [])
        for tag, handle in handles.items():
            got = log_of(redis_url, handle.id, len(expected))
            assert [x["msg"] for x in got] == [e.format(tag) for e in expected]


def test_an_app_with_an_in_process_worker_keeps_its_own_prints(
        redis_url: str, redis_client: redis.Redis, jobs_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()

    def app_thread() -> None:  # the app's own thread, printing while jobs run
        n = 0
        while not stop.is_set():
            print(f"app line {n}")
            n += 1
            stop.wait(0.005)

    with init_worker(redis_url=redis_url, jobs_dir=str(jobs_dir), workers="default"):
        thread = threading.Thread(target=app_thread)
        thread.start()
        try:
            print("app before")
            handle = enqueue("apart", {"tag": "job"})
            assert handle.result(wait_timeout=5000) == "job"
            print("app after")
        finally:
            stop.set()
            thread.join()
        got = log_of(redis_url, handle.id, 5)
    assert [x["msg"] for x in got] == [f"job-{i}" for i in range(5)]
    out = capsys.readouterr().out.splitlines()
    assert {"app before", "app after", "app line 0"} <= set(out)
    assert not [line for line in out if line.startswith("job-")]
    assert not isinstance(sys.stdout, JobStream)  # the worker stopped: put back


def test_a_timed_out_job_thread_goes_on_printing_into_its_log_until_it_returns(
        redis_url: str, redis_client: redis.Redis, jobs_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    with running_supervisor(redis_url, jobs_dir=str(jobs_dir)), \
            client_for(redis_url, jobs_dir=str(jobs_dir)) as client:
        handle = client.enqueue("outlives", timeout=200)
        with pytest.raises(JobTimeout):
            handle.result(wait_timeout=5000)
        got = log_of(redis_url, handle.id, 2)  # as its ctx.log lines would
    assert [x["msg"] for x in got] == ["before the deadline", "after the deadline"]
    assert "deadline" not in capsys.readouterr().out


def test_a_task_an_async_job_leaves_behind_prints_to_the_real_stdout_once_it_returned(
        redis_url: str, redis_client: redis.Redis, jobs_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    with running_supervisor(redis_url, jobs_dir=str(jobs_dir)), \
            client_for(redis_url, jobs_dir=str(jobs_dir)) as client:
        handle = client.enqueue("leaves_a_task")
        assert handle.result(wait_timeout=5000) == "returned"
        wait_for(lambda: "left behind" in capsys.readouterr().out, timeout_s=5,
                 what="the task's print on stdout")
        got = log_of(redis_url, handle.id, 1)
    assert [x["msg"] for x in got] == ["in the job"]


def test_a_process_a_job_forks_prints_to_the_real_stdout(
        redis_url: str, redis_client: redis.Redis, jobs_dir: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    with running_supervisor(redis_url, jobs_dir=str(jobs_dir)), \
            client_for(redis_url, jobs_dir=str(jobs_dir)) as client:
        handle = client.enqueue("forks")
        assert handle.result(wait_timeout=5000) == "forked"
        got = log_of(redis_url, handle.id, 1)
    assert [x["msg"] for x in got] == ["in the job"]
    assert "from the forked child" in capfd.readouterr().out


def test_sandboxrunner_logs_shows_what_a_thread_mode_job_printed(
        redis_url: str, jobs_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXRUNNER_")}
    env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    project = jobs_dir.parent
    supervisor = subprocess.Popen([sys.executable, "-m", "sandboxrunner", "start"],
                                  cwd=project, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
    try:
        with client_for(redis_url, jobs_dir=str(jobs_dir)) as client:
            # a loaded machine takes seconds to start it: a caller waiting before it first
            # heartbeats is told no supervisor serves the queue
            wait_for(lambda: client.store.live_supervisors("default") > 0, timeout_s=30,
                     what="the supervisor heartbeating")
            handle = client.enqueue("chatty")
            assert handle.result(wait_timeout=20_000) == "logged"
        done = subprocess.run([sys.executable, "-m", "sandboxrunner", "logs", handle.id],
                              cwd=project, env=env, capture_output=True, text=True,
                              timeout=60)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor_out = supervisor.communicate(timeout=30)[0]
    assert done.returncode == 0, done.stderr
    printed = [line.split(None, 2)[-1] for line in done.stdout.splitlines()]
    assert "two" in printed and "four" in printed and "no newline at the end" in printed
    assert "two" not in supervisor_out.split()

