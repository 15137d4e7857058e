"""Running the `sandboxrunner` command as a user does: a subprocess in a fresh folder,
with no REDIS_URL or SANDBOXRUNNER_* from the test run's own environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from sandboxrunner.embedded import stop_embedded
from sandboxrunner.keys import Keys
from tests.supervisors import ROOT, TEST_JOBS, wait_for

CLI = [sys.executable, "-m", "sandboxrunner"]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("SANDBOXRUNNER_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, env=cli_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def project_with(tmp_path: Path, jobs: dict[str, str]) -> Path:
    """TMP_PATH with a worker_jobs/ folder holding JOBS (name -> source)."""
    folder = tmp_path / "worker_jobs"
    folder.mkdir(parents=True)
    for name, body in jobs.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return tmp_path


@contextmanager
def no_server_left_in(folder: Path) -> Iterator[None]:
    """Stops an embedded server the code under test should not have started in FOLDER."""
    try:
        yield
    finally:
        stop_embedded(folder)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The command's stderr, checked to be one `error:` line and no traceback."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@contextmanager
def cli_supervisor(cwd: Path, *args: str, url: str = "",
                   **env: str) -> Iterator[subprocess.Popen]:
    """`sandboxrunner start` at URL (its ARGS give it) or env["REDIS_URL"], waited for
    until it serves `default`."""
    proc = subprocess.Popen(CLI + ["start", *args], cwd=cwd, env=cli_env(**env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with redis.Redis.from_url(url or env["REDIS_URL"]) as client:
            wait_for(lambda: proc.poll() is not None or client.zcard(Keys().sups("default")),
                     timeout_s=30, what="the supervisor to serve queue default")
        assert proc.poll() is None, "the supervisor exited"
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def jobs_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a command using tests/jobs at REDIS_URL, with a short lease."""
    return {"REDIS_URL": redis_url, "SANDBOXRUNNER_JOBS_DIR": str(TEST_JOBS),
            "SANDBOXRUNNER_LEASE_MS": "400", "SANDBOXRUNNER_HEARTBEAT_MS": "100", **extra}
