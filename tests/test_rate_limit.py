"""Rate limits: a job file's ``rate_limit = "5/s"`` (also per minute and per hour) holds
across every supervisor, checked in the claim script: jobs over it wait as ``throttled``
and run once a slot frees, they never fail; a bad string is an error at load naming the
file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from sandboxrunner.errors import JobLoadError
from sandboxrunner.jobspec import RateLimit
from sandboxrunner.keys import Keys
from sandboxrunner.registry import load_registry
from sandboxrunner.snapshot import SnapshotReader
from tests.clirun import one_error_line, project_with, run_cli
from tests.deployments import every_deployment
from tests.supervisors import (
    MODES,
    SupervisorProcess,
    client_for,
    make_config,
    running_supervisor,
    wait_for,
)

KEYS = Keys()


def _starts(redis_client: redis.Redis, job_ids: list[str]) -> list[int]:
    """The claim time (server ms) of each job: what a limit counts."""
    return sorted(int(redis_client.hget(KEYS.job(i), "start")) for i in job_ids)


def _most_in_any_window(starts: list[int], window_ms: int) -> int:
    """The most starts in any WINDOW_MS long stretch (each start opens a stretch)."""
    most, lo = 0, 0
    for hi, start in enumerate(starts):
        while starts[lo] <= start - window_ms:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


@pytest.mark.parametrize("text, limit", [("100/m", RateLimit(100, 60_000)),
                                         ("5/s", RateLimit(5, 1000)),
                                         ("1000/h", RateLimit(1000, 3_600_000)),
                                         (" 7 / s ", RateLimit(7, 1000))])
def test_a_rate_limit_is_read_from_the_job_file(tmp_path: Path, text: str,
                                               limit: RateLimit) -> None:
    (tmp_path / "job.py").write_text(f"rate_limit = {text!r}\ndef run(data):\n    return 1\n")
    assert load_registry(tmp_path, include_plugins=False).get("job").rate_limit == limit


@pytest.mark.parametrize("bad", ["'100/x'", "'0/s'", "'-1/m'", "'abc'", "5", "'1.5/s'",
                                 "'/s'", "'5/'"])
def test_a_bad_rate_limit_is_an_error_at_load_naming_the_file(tmp_path: Path,
                                                              bad: str) -> None:
    path = tmp_path / "job.py"
    path.write_text(f"rate_limit = {bad}\ndef run(data):\n    return 1\n")
    with pytest.raises(JobLoadError, match=r"rate_limit.*like '100/m'") as caught:
        load_registry(tmp_path, include_plugins=False)
    assert str(path) in str(caught.value)


def test_the_cli_says_which_file_has_a_bad_rate_limit(tmp_path: Path) -> None:
    project = project_with(tmp_path, {"bad": "rate_limit = '10 per second'\n"
                                             "def run(data):\n    return 1\n"})
    done = run_cli(["jobs"], project)
    assert done.returncode == 3
    line = one_error_line(done)
    assert "bad.py" in line and "rate_limit" in line and "'10 per second'" in line


def test_jobs_shows_each_jobs_rate_limit_and_retries(tmp_path: Path) -> None:
    project = project_with(tmp_path, {
        "mail": "rate_limit = '100/m'\nretries = 3\ndef run(data):\n    return 1\n",
        "plain": "def run(data):\n    return 1\n"})
    done = run_cli(["jobs"], project)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()[:3]
    assert header.split()[:7] == ["name", "queue", "cron", "singleton", "timeout_ms",
                                  "retries", "rate_limit"], header
    cells = {row.split()[0]: row.split() for row in rows}
    assert cells["mail"][5:7] == ["3", "100/m"] and cells["plain"][5:7] == ["0", "-"], cells


@every_deployment
@pytest.mark.parametrize("mode", MODES)
def test_jobs_over_the_limit_wait_throttled_and_all_run(
        redis_url: str, redis_client: redis.Redis, mode: str) -> None:
    with running_supervisor(redis_url, **MODES[mode]), client_for(redis_url) as client:
        handles = [client.enqueue("limited", n) for n in range(12)]
        wait_for(lambda: redis_client.zcard(KEYS.throttled("default")),
                 what="throttled jobs")
        statuses = {redis_client.hget(KEYS.job(h.id), "status") for h in handles}
        assert b"throttled" in statuses
        assert [h.result(wait_timeout=10_000) for h in handles] == [h.id for h in handles]
    starts = _starts(redis_client, [h.id for h in handles])
    assert _most_in_any_window(starts, 1000) <= 5, starts
    assert starts[-1] - starts[0] >= 2000  # 12 jobs at 5/s: a third window at least
    assert redis_client.zcard(KEYS.throttled("default")) == 0


def test_throttled_jobs_each_get_their_own_slot_instead_of_all_waking_at_once(
        redis_url: str, redis_client: redis.Redis) -> None:
    # 30 jobs at 5/s: 5 run now, the other 25 wait for slots 1, 2, 3, 4 and 5 s later,
    # five a slot, so a freed slot wakes the jobs that can take it, not all 25
    with client_for(redis_url) as client:
        handles = [client.enqueue("limited", n) for n in range(30)]
        with running_supervisor(redis_url):
            wait_for(lambda: redis_client.zcard(KEYS.throttled("default")) == 25,
                     what="25 throttled jobs")
            dues = sorted(int(d) for _, d in redis_client.zrange(
                KEYS.throttled("default"), 0, -1, withscores=True))
            assert dues[-1] - dues[0] >= 3500, dues
            assert max(dues.count(d) for d in set(dues)) <= 5
            assert [h.result(wait_timeout=15_000) for h in handles] == [h.id for h in handles]
    starts = _starts(redis_client, [h.id for h in handles])
    assert _most_in_any_window(starts, 1000) <= 5, starts


def test_twenty_a_second_with_two_supervisors_over_ten_seconds_stays_within_one_job(
        redis_url: str, redis_client: redis.Redis) -> None:
    sups = [SupervisorProcess(redis_url, args, SANDBOXRUNNER_WORKERS="default")
            for args in ([], ["--separate-process", "--concurrency", "4"])]
    try:
        for sup in sups:
            sup.wait_ready()
        with client_for(redis_url) as client:
            handles = [client.enqueue("limited_20", n) for n in range(210)]
            for h in handles:
                h.result(wait_timeout=30_000)
    finally:
        for sup in sups:
            sup.stop()
    starts = _starts(redis_client, [h.id for h in handles])
    most = _most_in_any_window(starts, 1000)
    assert most <= 21, most
    assert starts[-1] - starts[0] >= 10_000 - 1000  # the limit, not the machine, paced it
    sids = {redis_client.hget(KEYS.job(h.id), "sid") for h in handles}
    assert len(sids) == 2  # both supervisors ran them


def test_top_shows_throttled_jobs(redis_url: str, tmp_path: Path) -> None:
    with running_supervisor(redis_url), client_for(redis_url) as client:
        for n in range(30):  # 6 s of work at 5/s: still throttled while top looks
            client.enqueue("limited", n)
        reader = SnapshotReader(make_config(redis_url), redis_url)
        try:
            queue = wait_for(lambda: next((q for q in reader.read().queues
                                          if q.name == "default" and q.throttled), None),
                             what="throttled jobs in the snapshot")
        finally:
            reader.close()
        assert 0 < queue.throttled <= 25
        top = run_cli(["top", "--json"], tmp_path, REDIS_URL=redis_url)
        assert "throttled" in json.loads(top.stdout)["queues"]["default"]
        screen = run_cli(["top", "--once"], tmp_path, REDIS_URL=redis_url,
                         COLUMNS="160").stdout
        assert "throttled" in screen
        narrow = run_cli(["top", "--once"], tmp_path, REDIS_URL=redis_url, COLUMNS="80")
        assert "throttled " in narrow.stdout.split("\nqueues")[0]  # the totals, wrapped
