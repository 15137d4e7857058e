"""The traceback a caller gets for a failed job starts at the user's handler, in both
modes and for sync and async handlers: the runner's own frames above it (the executor,
the child, the spec's call, asyncio's run_until_complete) are dropped, and every frame
below the handler is kept, ours included."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sandboxrunner
from sandboxrunner import JobFailed
from tests.supervisors import ROOT, SupervisorProcess, client_for, running_supervisor

PACKAGE_DIR = Path(sandboxrunner.__file__).parent

JOBS = {
    "charge": """
        def _check(card):
            raise ValueError(f"card {card} declined")


        def run(data, ctx):
            _check(data["card"])
    """,
    "acharge": """
        import asyncio


        async def _check(card):
            await asyncio.sleep(0)
            raise ValueError(f"card {card} declined")


        async def run(data, ctx):
            await _check(data["card"])
    """,
    "calls_unknown": """
        from sandboxrunner import run_job


        def run(data, ctx):
            return run_job("no_such_job")
    """,
}


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "worker_jobs"
    folder.mkdir()
    for name, body in JOBS.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return folder


def frames(traceback_text: str) -> list[tuple[str, str]]:
    """(file, function) of each frame of the outermost exception, top first."""
    first = traceback_text.split("\nDuring handling")[0].split("\nThe above exception")[0]
    return re.findall(r'^  File "([^"]+)", line \d+, in (\S+)$', first, re.MULTILINE)


def remote_traceback(redis_url: str, jobs_dir: Path, job: str, **config: object) -> str:
    with running_supervisor(redis_url, jobs_dir=str(jobs_dir), **config), \
            client_for(redis_url, jobs_dir=str(jobs_dir)) as client, \
            pytest.raises(JobFailed) as failed:
        client.run_job(job, {"card": "42"})
    return failed.value.remote_traceback


MODES = {"threads": {}, "processes": {"use_separate_process": True, "concurrency": 1}}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("job", ["charge", "acharge"])
def test_a_remote_traceback_starts_at_the_handler(redis_url: str, jobs_dir: Path, mode: str,
                                                  job: str) -> None:
    text = remote_traceback(redis_url, jobs_dir, job, **MODES[mode])
    assert text.startswith("Traceback (most recent call last):\n"), text
    source = str(jobs_dir / f"{job}.py")
    assert frames(text) == [(source, "run"), (source, "_check")], text
    assert text.rstrip().endswith("ValueError: card 42 declined")


@pytest.mark.parametrize("mode", MODES)
def test_frames_below_the_handler_are_kept_even_when_they_are_ours(
        redis_url: str, jobs_dir: Path, mode: str) -> None:
    text = remote_traceback(redis_url, jobs_dir, "calls_unknown", **MODES[mode])
    found = frames(text)
    assert found[0] == (str(jobs_dir / "calls_unknown.py"), "run"), text
    below = [file for file, _ in found[1:]]
    assert below and all(file.startswith(str(PACKAGE_DIR)) for file in below), text
    assert "UnknownJob" in text.rstrip().splitlines()[-1]


def test_the_cli_prints_the_traceback_from_the_handler_down(redis_url: str,
                                                            jobs_dir: Path) -> None:
    project = jobs_dir.parent
    env = {"SANDBOXRUNNER_JOBS_DIR": str(jobs_dir)}
    supervisor = SupervisorProcess(redis_url, ["--separate-process", "-c", "1"], **env)
    try:
        supervisor.wait_ready()
        cli_env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXRUNNER_")}
        cli_env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-m", "sandboxrunner", "run", "charge",
                               '{"card": "42"}'], cwd=project, env=cli_env,
                              capture_output=True, text=True, timeout=60)
    finally:
        supervisor.stop()
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].startswith(f'  File "{jobs_dir / "charge.py"}", line '), done.stderr
    assert str(PACKAGE_DIR) not in done.stderr
    assert lines[-1].startswith("error: job charge (") and "card 42 declined" in lines[-1]
