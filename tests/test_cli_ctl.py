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


def test_cancel_says_what_it_did_for_a_queued_a_running_and_a_settled_job(
        redis_url: str, tmp_path: Path) -> None:
    with client_for(redis_url) as client:
        queued = client.enqueue("echo", {"n": 1})
        done = run_cli(["cancel", queued.id], tmp_path, REDIS_URL=redis_url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"cancelled {queued.id}: it had not started, and never runs"
        assert client.get_job(queued.id).status == "cancelled"
        again = run_cli(["cancel", queued.id], tmp_path, REDIS_URL=redis_url)
        assert again.returncode == 0
        assert again.stdout.strip() == f"{queued.id} is already cancelled: nothing changed"
        with running_supervisor(redis_url, use_separate_process=True, concurrency=1) as sup:
            running = client.enqueue("slow", {"seconds": 30})
            wait_for(lambda: client.get_job(running.id).status == "active", what="it runs")
            done = run_cli(["cancel", running.id.partition("-")[2][:8]], tmp_path,
                           REDIS_URL=redis_url)
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == (
                f"cancelling {running.id}: it runs on supervisor {sup.sid}, which stops it "
                f"within a heartbeat")
            wait_for(lambda: client.get_job(running.id).status == "cancelled",
                     what="it settled cancelled")
        result = run_cli(["result", running.id], tmp_path, REDIS_URL=redis_url)
        assert result.returncode == 1 and "was cancelled" in result.stderr


def test_cancel_of_an_unknown_or_malformed_id_is_one_line_and_exit_2(redis_url: str,
                                                                     tmp_path: Path) -> None:
    for given, says in [("default-" + "0" * 32, "no job default-000"),
                        ("bad id", "is not a job id")]:
        done = run_cli(["cancel", given], tmp_path, REDIS_URL=redis_url)
        assert done.returncode == 2, done.stderr
        assert says in one_error_line(done)


def test_retry_runs_one_failed_job_again_or_refuses_with_exit_2(redis_url: str,
                                                                 tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with running_supervisor(redis_url), client_for(redis_url) as client:
        failed = client.enqueue("flaky", {"file": str(runs), "succeed_on": 2}, retries=0)
        wait_for(lambda: client.get_job(failed.id).status == "failed", what="it failed")
        done = run_cli(["retry", failed.id], tmp_path, REDIS_URL=redis_url)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"retried {failed.id} (flaky): it runs again, same id"
        assert failed.result(wait_timeout=10_000) == {"attempt": 2}
        again = run_cli(["retry", failed.id], tmp_path, REDIS_URL=redis_url)
        assert again.returncode == 2 and "is completed" in one_error_line(again)
    neither = run_cli(["retry"], tmp_path, REDIS_URL=redis_url)
    assert neither.returncode == 2 and "ID or --failed" in one_error_line(neither)
    both = run_cli(["retry", failed.id, "--failed"], tmp_path, REDIS_URL=redis_url)
    assert both.returncode == 2 and "ID or --failed" in one_error_line(both)


def test_retry_failed_runs_every_failed_job_of_a_queue_and_name_again(
        redis_url: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with running_supervisor(redis_url), client_for(redis_url) as client:
        flaky = [client.enqueue("flaky", {"file": str(runs), "succeed_on": 2}, retries=0)
                 for _ in range(3)]
        other = client.enqueue("fail", {"card": "1"})
        for handle in [*flaky, other]:
            wait_for(lambda h=handle: client.get_job(h.id).status == "failed", what="failed")
        done = run_cli(["retry", "--failed", "--queue", "default", "--name", "flaky"],
                       tmp_path, REDIS_URL=redis_url)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.strip().splitlines()
        assert sorted(line.split()[1] for line in lines[:-1]) == sorted(h.id for h in flaky)
        assert lines[-1] == "retried 3 failed job(s) of queue default named flaky"
        for handle in flaky:
            assert handle.result(wait_timeout=10_000) == {"attempt": 2}
        assert client.get_job(other.id).status == "failed"
        none_left = run_cli(["retry", "--failed", "--name", "flaky"], tmp_path,
                            REDIS_URL=redis_url)
        assert none_left.stdout.strip() == "retried 0 failed job(s) named flaky"


def test_list_pages_through_jobs_as_text_and_json(redis_url: str, tmp_path: Path) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        ids = []
        for n in range(3):
            handle = client.enqueue("echo", {"n": n})
            handle.result(wait_timeout=10_000)
            ids.append(handle.id)
    first = run_cli(["list", "--status", "completed", "--limit", "2"], tmp_path,
                    REDIS_URL=redis_url)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert lines[0].split()[:4] == ["id", "queue", "status", "name"]
    shown = [line.split()[0] for line in lines[1:3]]
    cursor = lines[-1].rpartition("--cursor ")[2]
    assert lines[-1].startswith("more: sandboxrunner list")
    rest = run_cli(["list", "--status", "completed", "--limit", "2", "--json", "--cursor",
                    cursor], tmp_path, REDIS_URL=redis_url)
    page = json.loads(rest.stdout)
    assert page["cursor"] is None
    assert sorted(shown + [item["id"] for item in page["items"]]) == sorted(ids)
    bad = run_cli(["list", "--status", "done"], tmp_path, REDIS_URL=redis_url)
    assert bad.returncode == 2 and "status 'done'" in one_error_line(bad)
