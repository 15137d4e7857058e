"""The `sandboxrunner` command as a user runs it, in fresh project folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.supervisors import ROOT, TEST_JOBS

CLI = [sys.executable, "-m", "sandboxrunner"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("SANDBOXRUNNER_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _cli(args: list[str], cwd: Path, timeout: float = 60,
         **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def _project(tmp_path: Path, jobs: dict[str, str]) -> Path:
    folder = tmp_path / "worker_jobs"
    folder.mkdir(parents=True)
    for name, body in jobs.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return tmp_path


HELLO = """
    def run(data, ctx):
        ctx.log("hello", data=data)
        return {"hello": data["name"]}
"""


def test_embedded_server_runs_a_job_end_to_end_in_a_fresh_folder(tmp_path: Path) -> None:
    project = _project(tmp_path, {"hello": HELLO})
    supervisor = subprocess.Popen(CLI + ["start"], cwd=project, env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        done = _cli(["run", "hello", '{"name": "ada"}'], project)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"hello": "ada"}
        state = json.loads((project / ".sandboxrunner" / "redis.json").read_text())
        assert state["url"].startswith("redis://127.0.0.1:")
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        if supervisor.stdout:
            supervisor.stdout.close()
        assert _cli(["redis", "stop"], project).returncode == 0


def test_jobs_lists_the_discovered_jobs(tmp_path: Path) -> None:
    project = _project(tmp_path, {"hello": HELLO, "urgent": "worker = 'priority'\n"
                                  "timeout = 500\ndef run():\n    return 1\n"})
    done = _cli(["jobs"], project)
    assert done.returncode == 0, done.stderr
    assert "hello" in done.stdout and "urgent" in done.stdout and "priority" in done.stdout


@pytest.mark.parametrize("body, problem", [
    ("import no_such_module\ndef run(): pass\n", "No module named 'no_such_module'"),
    ("def handler(): pass\n", "run"),
    ("worker = 'urgent'\ndef run(): pass\n", "priority"),
    ("cron = '61 * * * *'\ndef run(): pass\n", "61 * * * *"),
    ("singleton = 'yes'\ndef run(): pass\n", "singleton"),
])
def test_start_and_jobs_refuse_a_broken_job_file_naming_it(tmp_path: Path, body: str,
                                                            problem: str) -> None:
    project = _project(tmp_path, {"broken": body})
    for command in (["jobs"], ["start"]):
        done = _cli(command, project, timeout=30)
        assert done.returncode != 0
        assert "broken.py" in done.stderr
        assert problem in done.stderr


def test_unknown_worker_name_is_refused_with_the_supported_ones(tmp_path: Path) -> None:
    done = _cli(["start", "--workers", "urgent"], _project(tmp_path, {"hello": HELLO}))
    assert done.returncode != 0
    assert "default" in done.stderr and "priority" in done.stderr


def test_run_reports_bad_input_and_failures_with_exit_codes(redis_url: str,
                                                            tmp_path: Path) -> None:
    env = {"REDIS_URL": redis_url, "SANDBOXRUNNER_JOBS_DIR": str(TEST_JOBS)}
    bad_json = _cli(["run", "echo", "{not json"], tmp_path, **env)
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    unknown = _cli(["run", "nope", "1"], tmp_path, **env)
    assert unknown.returncode == 2 and "available jobs" in unknown.stderr
    supervisor = subprocess.Popen(CLI + ["start"], cwd=tmp_path, env=_env(**env),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        failed = _cli(["run", "fail", '{"card": "1"}'], tmp_path, **env)
        assert failed.returncode == 1
        assert "PaymentDeclined" in failed.stderr and "card 1 declined" in failed.stderr
        timed = _cli(["run", "slow", '{"seconds": 2}', "--timeout", "200"], tmp_path, **env)
        assert timed.returncode == 1 and "timed out" in timed.stderr
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=20)


def test_missing_redis_is_a_clear_error_without_password(tmp_path: Path) -> None:
    started = time.monotonic()
    done = _cli(["run", "hello", "1"], _project(tmp_path, {"hello": HELLO}),
                REDIS_URL="redis://:hunter2@127.0.0.1:1/0")
    assert done.returncode == 4
    assert "127.0.0.1:1" in done.stderr and "hunter2" not in done.stderr
    assert time.monotonic() - started < 20


def test_config_comes_from_pyproject(tmp_path: Path) -> None:
    project = _project(tmp_path, {"hello": HELLO})
    (project / "pyproject.toml").write_text("[tool.sandboxrunner]\njobs_dir = 'jobs_here'\n")
    (project / "worker_jobs").rename(project / "jobs_here")
    done = _cli(["jobs"], project)
    assert done.returncode == 0 and "hello" in done.stdout
    (project / "pyproject.toml").write_text("[tool.sandboxrunner]\nno_such_key = 1\n")
    done = _cli(["jobs"], project)
    assert done.returncode != 0 and "no_such_key" in done.stderr
