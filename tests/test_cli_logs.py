"""`sandboxrunner logs` and the short ids `logs` and `result` take, as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from sandboxrunner.job import PreparedJob
from sandboxrunner.keys import queue_of_job
from sandboxrunner.store import Store
from tests.clirun import CLI, cli_env, jobs_env, one_error_line, run_cli
from tests.deployments import every_deployment
from tests.supervisors import client_for, make_config, running_supervisor, wait_for

# --------------------------------------------------------------------------- logs


def _logs(job_id: str, cwd: Path, redis_url: str, *args: str) -> subprocess.CompletedProcess:
    return run_cli(["logs", job_id, *args], cwd, timeout=30, **jobs_env(redis_url))


def test_logs_of_an_unknown_id_is_an_error_with_or_without_follow(redis_url: str,
                                                                  tmp_path: Path) -> None:
    missing = "default-" + "0" * 32
    for args in ([], ["--follow"]):
        started = time.monotonic()
        done = _logs(missing, tmp_path, redis_url, *args)
        assert done.returncode == 2, done.stderr
        line = one_error_line(done)
        assert f"no job {missing}" in line and "result_ttl" in line
        assert done.stdout == ""
        assert time.monotonic() - started < 10


def test_logs_labels_lines_as_top_does(redis_url: str, tmp_path: Path) -> None:
    with running_supervisor(redis_url, use_separate_process=True, concurrency=1), \
            client_for(redis_url) as client:
        handle = client.enqueue("proc_logs")
        assert handle.result(wait_timeout=10_000) == "logged"
    env = jobs_env(redis_url)
    shown = wait_for(lambda: (lambda out: out if "from sys.stdout.buffer" in out else "")(
        run_cli(["logs", handle.id], tmp_path, **env).stdout), what="every log line")
    tail = run_cli(["top", "--once", "--width", "160"], tmp_path, **env).stdout
    top_labels = {parts[3]: parts[1] for parts in
                  (line.split(maxsplit=3) for line in tail.split("log tail")[1].splitlines())
                  if len(parts) == 4}
    ours = {parts[2]: parts[1] for parts in (line.split(maxsplit=2)
                                             for line in shown.splitlines())
            if len(parts) == 3 and parts[0].count(":") == 2}
    assert ours["two"] == "out" and ours["four"] == "err" and ours["from fd 1"] == "out"
    for msg in ("two", "four", "five", "from fd 1", "three"):
        assert ours[msg] == top_labels[msg], (msg, shown, tail)


@every_deployment
def test_logs_follow_prints_lines_as_they_come_and_ends_with_the_outcome(
        redis_url: str, tmp_path: Path) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        handle = client.enqueue("slow", {"seconds": 0.6})
        followed = _logs(handle.id, tmp_path, redis_url, "-f")
        failed = client.enqueue("fail", {"card": "4"})
        with pytest.raises(Exception, match="card 4 declined"):
            failed.result(wait_timeout=5000)
        after = _logs(failed.id, tmp_path, redis_url)
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    assert "sleeping" in lines[0]
    assert lines[-1].split()[1:4] == ["job", handle.id, "slow"]
    assert "completed in " in lines[-1]
    assert after.returncode == 0
    assert "failed: PaymentDeclined: card 4 declined" in after.stdout.splitlines()[-1]


def test_logs_follow_of_a_queued_job_says_no_supervisor_serves_it(redis_url: str,
                                                                  tmp_path: Path) -> None:
    with client_for(redis_url) as client:
        handle = client.enqueue("echo", {"x": 1})
    follow = subprocess.Popen(CLI + ["logs", "-f", handle.id], cwd=tmp_path,
                              env=cli_env(**jobs_env(redis_url)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        first = follow.stdout.readline()
        assert "queued" in first and "no live supervisor serves queue 'default'" in first
        assert "sandboxrunner start" in first
        with running_supervisor(redis_url):
            out, err = follow.communicate(timeout=20)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    assert follow.returncode == 0, err
    assert "echo" in out and "completed in " in out.splitlines()[-1]


def test_logs_of_a_delayed_job_says_when_it_is_due(redis_url: str, tmp_path: Path) -> None:
    with client_for(redis_url) as client:
        handle = client.enqueue("echo", {"x": 1}, delay=90_000)
    done = _logs(handle.id, tmp_path, redis_url)
    assert done.returncode == 0, done.stderr
    line = done.stdout.splitlines()[-1]
    assert line.split()[1:4] == ["job", handle.id, "echo"]
    assert "delayed on 'default', due at " in line, line
    assert re.search(r"due at \d\d:\d\d:\d\d \(in (8\d|90)\.\d\d s\)", line), line
    # nobody serves the queue: said as for a queued job, without calling it queued
    assert "no live supervisor serves queue 'default'" in line, line


# --------------------------------------------------------------------------- short ids


def _enqueued_with_id(redis_url: str, job_id: str, name: str = "echo") -> None:
    """A job enqueued under a chosen id, so that ids can share a prefix on purpose."""
    config = make_config(redis_url)
    store = Store(config, redis_url)
    try:
        store.enqueue(PreparedJob(queue_of_job(job_id), job_id, name, '{"x": 1}', 1000))
    finally:
        store.close()


def test_the_short_id_top_shows_is_accepted_by_logs_and_result(redis_url: str,
                                                               tmp_path: Path) -> None:
    env = jobs_env(redis_url)
    with running_supervisor(redis_url), client_for(redis_url) as client:
        done = client.enqueue("echo", {"n": 1})
        assert done.result(wait_timeout=5000)["echo"] == {"n": 1}
        failed = client.enqueue("fail", {"card": "5"})
        running = client.enqueue("slow", {"seconds": 1.5})
        wait_for(lambda: client.store.job_fields(running.id, "status")[0] == "active",
                 what="the slow job to start")
        tail = run_cli(["top", "--once", "--width", "160"], tmp_path, **env).stdout
        for handle in (done, failed, running):
            short = handle.id.partition("-")[2][:8]
            assert short in tail
            full = run_cli(["logs", handle.id], tmp_path, **env)
            by_short = run_cli(["logs", short], tmp_path, **env)
            assert by_short.returncode == 0, by_short.stderr
            assert by_short.stdout.splitlines()[0] == full.stdout.splitlines()[0]
        result = run_cli(["result", done.id.partition("-")[2][:8]], tmp_path, **env)
        assert result.returncode == 0 and json.loads(result.stdout)["echo"] == {"n": 1}
    queued = client_for(redis_url)
    with queued as client:
        waiting = client.enqueue("echo", {"n": 2})
    by_short = run_cli(["logs", waiting.id.partition("-")[2][:8]], tmp_path, **env)
    assert by_short.returncode == 0 and "queued" in by_short.stdout


def test_an_ambiguous_short_id_lists_the_candidates(redis_url: str, tmp_path: Path) -> None:
    first, second = "default-abcd1234" + "0" * 24, "default-abcd1234" + "1" * 24
    other = "priority-abcd9999" + "2" * 24
    for job_id in (first, second, other):
        _enqueued_with_id(redis_url, job_id)
    env = jobs_env(redis_url)
    ambiguous = run_cli(["logs", "abcd1234"], tmp_path, **env)
    assert ambiguous.returncode == 2
    line = one_error_line(ambiguous)
    assert "abcd1234" in line and first in line and second in line and other not in line
    for short, full in [("abcd12340", first), ("default-abcd12341", second),
                        ("abcd9", other)]:
        done = run_cli(["logs", short], tmp_path, **env)
        assert done.returncode == 0, done.stderr
        assert f"{full} echo queued" in done.stdout
    assert run_cli(["result", "abcd", "--wait-timeout", "100"], tmp_path, **env).returncode == 2


@pytest.mark.parametrize("given", ["ffffffff", "default-ffff", "hello", "priority-"])
def test_an_unknown_short_id_says_where_it_looked(given: str, redis_url: str,
                                                  tmp_path: Path) -> None:
    _enqueued_with_id(redis_url, "default-abcd1234" + "0" * 24)
    done = run_cli(["logs", given], tmp_path, **jobs_env(redis_url))
    assert done.returncode == 2
    line = one_error_line(done)
    assert repr(given) in line and "full id" in line
