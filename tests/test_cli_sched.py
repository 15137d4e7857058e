"""`sandboxrunner run` with a delay, a run_at and an idempotency key, as a user runs it:
the CLI in a subprocess of a fresh folder, against a real supervisor."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import redis

from sandboxrunner.keys import Keys
from tests.clirun import one_error_line, run_cli
from tests.supervisors import TEST_JOBS, running_supervisor


def test_run_takes_delay_run_at_and_job_id(redis_url: str, redis_client: redis.Redis,
                                          tmp_path: Path) -> None:
    env = {"REDIS_URL": redis_url, "SANDBOXRUNNER_JOBS_DIR": str(TEST_JOBS)}
    with running_supervisor(redis_url):
        delayed = run_cli(["run", "echo", "1", "--delay", "300", "--job-id", "cli-1"],
                          tmp_path, **env)
        assert delayed.returncode == 0, delayed.stderr
        assert json.loads(delayed.stdout)["echo"] == 1
        record = redis_client.hgetall(Keys().job("default-cli-1"))
        assert int(record[b"start"]) - int(record[b"enq"]) >= 300
        again = run_cli(["run", "echo", "2", "--job-id", "cli-1"], tmp_path, **env)
        assert json.loads(again.stdout)["echo"] == 1  # the first job's result
        at = (dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=300)).isoformat()
        started = time.time()
        timed = run_cli(["run", "echo", "3", "--run-at", at], tmp_path, **env)
        assert timed.returncode == 0 and json.loads(timed.stdout)["echo"] == 3
        assert time.time() >= started + 0.3
    for args, problem in ((["--delay", "-1"], "delay must be"),
                          (["--run-at", "2030-01-01T09:00:00"], "naive"),
                          (["--run-at", "tomorrow"], "run_at must be an ISO"),
                          (["--job-id", "a b"], "not a valid idempotency key")):
        bad = run_cli(["run", "echo", "1", *args], tmp_path, **env)
        assert bad.returncode == 2 and problem in one_error_line(bad), bad.stderr
