"""The job-control commands as a user runs them: `job`, `cancel`, `retry`, `list`, each a
subprocess in a fresh folder against the test server."""

from __future__ import annotations

import json
from pathlib import Path

from tests.clirun import one_error_line, run_cli
from tests.supervisors import client_for, running_supervisor, wait_for


def test_job_prints_what_get_job_knows_as_text_and_json(redis_url: str,
                                                        tmp_path: Path) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("progress_steps", {"steps": 4})
        assert handle.result(wait_timeout=10_000) == {"steps": 4}
        failing = client.enqueue("fail", {"card": "1"})
        wait_for(lambda: client.get_job(failing.id).status == "failed", what="it failed")
    done = run_cli(["job", handle.id], tmp_path, REDIS_URL=redis_url)
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
    assert fields["id"] == handle.id and fields["status"] == "completed"
    assert fields["name"] == "progress_steps" and fields["progress"].startswith("100%")
    assert json.loads(fields["result"]) == {"steps": 4}
    short = handle.id.partition("-")[2][:8]
    as_json = run_cli(["job", short, "--json"], tmp_path, REDIS_URL=redis_url)
    info = json.loads(as_json.stdout)
    assert info["id"] == handle.id and info["progress"]["fraction"] == 1.0
    failed = run_cli(["job", failing.id], tmp_path, REDIS_URL=redis_url)
    assert failed.returncode == 0 and "status      failed" in failed.stdout
    assert "PaymentDeclined: card 1 declined" in failed.stdout, failed.stdout


def test_job_of_an_unknown_or_malformed_id_is_one_line_and_exit_2(redis_url: str,
                                                                  tmp_path: Path) -> None:
    for given, says in [("default-" + "0" * 32, "no job default-000"),
                        ("not-an-id!", "is not a job id")]:
        done = run_cli(["job", given], tmp_path, REDIS_URL=redis_url)
        assert done.returncode == 2, done.stderr
        assert says in one_error_line(done)
