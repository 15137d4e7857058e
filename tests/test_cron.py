"""Cron: tick arithmetic, the fire script's decisions, and real supervisors firing each tick
exactly once, syncing and removing schedules, catching up once, and skipping busy singletons.

Cron job files are written per test into tmp_path (never into tests/jobs, whose jobs every
other test's supervisor loads), with the output file baked into the cron data.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sandboxrunner.cron import Schedule
from sandboxrunner.cron_state import list_schedules
from sandboxrunner.cron_text import (
    describe_pattern,
    fields_in_words,
    fire_time_text,
    next_fire_times,
    seconds_first_warning,
)
from sandboxrunner.job import CronRun, PreparedJob
from sandboxrunner.keys import Keys
from sandboxrunner.store import Store
from tests.deployments import every_deployment
from tests.supervisors import (
    ROOT,
    SupervisorProcess,
    client_for,
    make_config,
    running_supervisor,
    supervisor_env,
)

KEYS = Keys("sr")

RECORD_BODY = """
def run(data, ctx):
    import os, time
    with open(data["file"], "a") as fh:
        fh.write(f"{ctx.job.enqueued_at} {time.time()} {os.getpid()} {ctx.job.id}\\n")
    time.sleep(data.get("seconds", 0))
    return data
"""


def write_job(folder: Path, name: str, header: str, body: str = RECORD_BODY) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(header) + body)


def cron_job(folder: Path, name: str, pattern: str, out: Path, extra: str = "",
             **data: Any) -> None:
    cron = {"pattern": pattern, "data": {"file": str(out), **data}}
    write_job(folder, name, f"cron = {cron!r}\n{extra}\n")


def runs_of(path: Path) -> list[tuple[float, float]]:
    """(enqueued at, started at) of each recorded run, in epoch seconds."""
    if not path.exists():
        return []
    return [(float(f[0]), float(f[1])) for f in (line.split() for line in
                                                 path.read_text().splitlines())]


def cron_supervisor(redis_url: str, jobs: Path) -> SupervisorProcess:
    """`sandboxrunner start` in a subprocess, serving the job files in JOBS."""
    return SupervisorProcess(redis_url, SANDBOXRUNNER_JOBS_DIR=str(jobs))


def schedules(redis_url: str) -> dict[str, dict[str, Any]]:
    store = Store(make_config(redis_url), redis_url)
    try:
        return {row["job"]: row for row in list_schedules(store)}
    finally:
        store.close()


def wait_for(predicate: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# -- ticks -------------------------------------------------------------------------------


def test_ticks_follow_the_pattern_with_seconds_last_and_the_time_zone() -> None:
    every_second = Schedule("default", "j", "*/1 * * * * *", "UTC")
    t = ms("2024-01-01T12:00:05+00:00")
    assert every_second.tick_at_or_before(t) == t
    assert every_second.tick_at_or_before(t + 999) == t
    assert every_second.tick_after(t) == t + 1000
    at_30s = Schedule("default", "j", "* * * * * 30", "UTC")
    assert at_30s.tick_after(t) == ms("2024-01-01T12:00:30+00:00")
    assert at_30s.tick_at_or_before(t) == ms("2024-01-01T11:59:30+00:00")
    berlin_9am = Schedule("default", "j", "0 9 * * *", "Europe/Berlin")
    assert berlin_9am.tick_after(ms("2024-07-01T12:00:00+00:00")) == ms("2024-07-02T07:00+00:00")
    assert berlin_9am.tick_after(ms("2024-01-01T12:00:00+00:00")) == ms("2024-01-02T08:00+00:00")
    assert Schedule("default", "j", "0 9 * * *", "UTC").tick_after(
        ms("2024-01-01T12:00:00+00:00")) == ms("2024-01-02T09:00+00:00")


# -- schedules in words ----------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "tz", "words"), [
    ("30 2 * * *", "UTC", "At 02:30 (UTC)"),
    ("0 9 * * 1-5", "Europe/Berlin", "At 09:00, Monday through Friday (Europe/Berlin)"),
    # six fields: croniter reads seconds LAST, and so must the words
    ("* * * * * */2", "UTC", "Every 2 seconds (UTC)"),
    ("* * * * * 30", "UTC", "At 30 seconds past the minute (UTC)"),
    ("*/2 * * * * *", "UTC", "Every second, every 2 minutes (UTC)"),
    ("0 0 1 * 1", "UTC", "At 00:00, on day 1 of the month, or on Monday (UTC)"),
])
def test_a_schedule_is_described_in_words_as_croniter_reads_it(
        pattern: str, tz: str, words: str) -> None:
    assert describe_pattern(pattern, tz) == words


def test_the_fallback_words_name_each_field_as_croniter_reads_it() -> None:
    assert fields_in_words("*/15 9-17 * * mon-fri 30") == (
        "second 30, minute */15, hour 9-17, day of month *, month *, weekday mon-fri")
    assert fields_in_words("0 2 * * *") == (
        "minute 0, hour 2, day of month *, month *, weekday *")


def test_next_fire_times_follow_croniter_in_the_schedules_time_zone() -> None:
    after = ms("2024-07-01T12:00:00+00:00")
    assert next_fire_times("0 9 * * 1-5", "Europe/Berlin", after, 3) == [
        ms("2024-07-02T07:00:00+00:00"), ms("2024-07-03T07:00:00+00:00"),
        ms("2024-07-04T07:00:00+00:00")]
    assert fire_time_text(ms("2024-07-02T07:00:00+00:00"), "Europe/Berlin") == (
        "Tue 2024-07-02 09:00:00 CEST")
    assert fire_time_text(ms("2024-01-02T07:00:00+00:00"), "UTC") == "Tue 2024-01-02 07:00:00 UTC"


@pytest.mark.parametrize(("pattern", "meant", "rewrite"), [
    ("*/2 * * * * *", "every 2 seconds", "* * * * * */2"),
    ("0 */5 * * * *", "every 5 minutes", "*/5 * * * * 0"),
    ("0 0 12 * * *", "at 12:00", "0 12 * * * 0"),
])
def test_a_six_field_pattern_that_looks_seconds_first_is_warned_about(
        pattern: str, meant: str, rewrite: str) -> None:
    warning = seconds_first_warning(pattern)
    assert warning is not None and "\n" not in warning
    assert f"cron pattern {pattern!r}" in warning and "seconds LAST" in warning
    assert "every second" in warning
    assert f"If you meant seconds first ({meant}), write {rewrite!r}" in warning


def test_a_seconds_first_warning_offers_no_rewrite_that_croniter_would_reject() -> None:
    # read seconds first, hour 31 is no hour: the warning stands, without a rewrite
    assert seconds_first_warning("0 0 31 * * *") == (
        "cron pattern '0 0 31 * * *' has six fields, and croniter reads the sixth as the "
        "seconds (seconds LAST): it runs every second during the minutes that '0' matches")


@pytest.mark.parametrize("pattern", [
    "*/2 * * * *", "* * * * * *", "*/1 * * * * 0-59", "* * * * * */2", "30 2 * * * 0",
    "0 0 * * * 15"])
def test_other_patterns_get_no_seconds_first_warning(pattern: str) -> None:
    assert seconds_first_warning(pattern) is None


# -- the fire script -----------------------------------------------------------------------


def test_the_fire_script_fires_a_tick_once_and_refuses_early_old_changed_and_removed_ones(
        redis_url: str, redis_client: Any) -> None:
    store = Store(make_config(redis_url), redis_url)
    try:
        now = store.server_time_ms()
        minute = Schedule("default", "job", "* * * * *", "UTC")
        tick = minute.tick_at_or_before(now)
        store.cron_sync("default", "sid-1", [("job", "* * * * *", "UTC", tick + 60_000, "")])

        def fire(tick_ms: int, pattern: str = "* * * * *") -> str:
            run = PreparedJob("default", f"default-{tick_ms}", "job", "null", 1000)
            return store.cron_fire(CronRun(pattern, "UTC", tick_ms, tick_ms + 60_000,
                                           run)).outcome

        assert fire(tick) == "done"  # before the schedule existed (`since`)
        assert fire(tick + 60_000) == "early"
        raw = json.loads(redis_client.hget(KEYS.cron("default"), "job"))
        raw["since"] = raw["last"] = tick - 120_000  # as if synced long ago
        redis_client.hset(KEYS.cron("default"), "job", json.dumps(raw))
        assert fire(tick, pattern="*/5 * * * *") == "changed"
        assert fire(tick - 60_000) == "fired"
        assert fire(tick) == "fired"
        assert fire(tick) == "done"  # a second supervisor waking for the same tick
        assert fire(tick - 60_000) == "done"  # never back in time
        assert redis_client.llen(KEYS.wait("default")) == 2
        redis_client.hdel(KEYS.cron("default"), "job")
        assert fire(tick + 60_000) in ("gone", "early")
        redis_client.delete(KEYS.cron("default"))
        assert fire(tick) == "lost"
    finally:
        store.close()


# -- real supervisors ------------------------------------------------------------------------


@every_deployment
def test_an_every_second_schedule_fires_once_per_tick_across_two_supervisors(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "every_second", "*/1 * * * * *", out)
    sups = [cron_supervisor(redis_url, jobs), cron_supervisor(redis_url, jobs)]
    try:
        for sup in sups:
            sup.wait_ready()
        both_ready = time.time()
        time.sleep(4.0)
        stopped = time.time()  # a stopping supervisor fires no more ticks
        for sup in sups:
            sup.signal(signal.SIGTERM)
        for sup in sups:
            assert sup.wait() == 0
    finally:
        for sup in sups:
            sup.stop()
    ticks = [math.floor(enqueued) for enqueued, _ in runs_of(out)]
    assert len(ticks) == len(set(ticks)), f"a tick fired twice: {sorted(ticks)}"
    expected = set(range(math.ceil(both_ready), math.floor(stopped)))
    assert len(expected) >= 3 and len(ticks) >= 4
    assert expected <= set(ticks), f"missing {sorted(expected - set(ticks))} of {ticks}"
    assert sorted(ticks) == list(range(min(ticks), max(ticks) + 1))  # no gap anywhere
    row = schedules(redis_url)["every_second"]
    assert row["runs"] == len(ticks) and row["skips"] == 0
    assert row["last_outcome"] == "completed"
    assert row["next_ms"] == row["last_tick_ms"] + 1000


def test_a_restart_removes_schedules_of_jobs_it_has_without_cron_and_keeps_the_others(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "report", "0 * * * *", out)
    cron_job(jobs, "cleanup", "*/5 * * * *", out)
    first = cron_supervisor(redis_url, jobs)
    try:
        first.wait_ready()
        assert sorted(schedules(redis_url)) == ["cleanup", "report"]
        first.signal(signal.SIGTERM)
        assert first.wait() == 0
    finally:
        first.stop()
    assert sorted(schedules(redis_url)) == ["cleanup", "report"]  # stopping removes nothing
    write_job(jobs, "report", "")  # the cron export is gone, the job stays
    (jobs / "cleanup.py").unlink()  # the job is gone: this supervisor could not have loaded it
    second = cron_supervisor(redis_url, jobs)
    try:
        second.wait_ready()
        rows = schedules(redis_url)
        assert sorted(rows) == ["cleanup"]
        assert not rows["cleanup"]["loaded_by_newest"]
        assert rows["cleanup"]["synced_by"] != rows["cleanup"]["newest_sid"]
        second.signal(signal.SIGTERM)
        assert second.wait() == 0
        output = second.output()
    finally:
        second.stop()
    assert "cron schedule report of default removed: job report has no cron" in output
    # once: a start syncs once, however the supervisor sequences its start-up
    assert output.count("cron schedule cleanup of default kept: this supervisor has no job "
                        "cleanup") == 1


def test_a_supervisor_with_other_jobs_leaves_the_schedules_of_the_first_firing(
        redis_url: str, tmp_path: Path) -> None:
    """`start` from the wrong project folder against the same Redis."""
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "tick", "*/1 * * * * *", out)
    other_jobs = tmp_path / "other_project_jobs"
    cron_job(other_jobs, "other", "0 0 1 1 *", tmp_path / "other.txt")
    real = cron_supervisor(redis_url, jobs)
    wrong = None
    try:
        real.wait_ready()
        wrong = cron_supervisor(redis_url, other_jobs)
        wrong.wait_ready()
        started_at = time.time()
        rows = schedules(redis_url)
        assert sorted(rows) == ["other", "tick"]
        assert rows["other"]["loaded_by_newest"] and not rows["tick"]["loaded_by_newest"]
        wait_for(lambda: any(enq > started_at + 1 for enq, _ in runs_of(out)), timeout_s=5)
    finally:
        real.stop()
        if wrong:
            wrong.stop()


def test_a_missing_jobs_folder_exits_3_and_leaves_the_schedules_alone(
        redis_url: str, redis_client: Any, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "nightly", "30 2 * * *", out)
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        pass
    before = redis_client.hgetall(KEYS.cron("default"))
    assert b"nightly" in before
    missing = tmp_path / "nonexistent"
    done = subprocess.run([sys.executable, "-m", "sandboxrunner", "start", "--jobs-dir",
                           str(missing)], cwd=tmp_path, env=supervisor_env(redis_url),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and f"jobs folder {missing} does not exist" in done.stderr
    assert redis_client.hgetall(KEYS.cron("default")) == before


def test_an_older_supervisor_stops_firing_a_schedule_a_newer_one_removed(
        redis_url: str, tmp_path: Path) -> None:
    """A rolling deploy: the old version keeps running while the new one starts."""
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "tick", "*/1 * * * * *", out)
    old = cron_supervisor(redis_url, jobs)
    new = None
    try:
        old.wait_ready()
        wait_for(lambda: len(runs_of(out)) >= 1)
        write_job(jobs, "tick", "")  # the new version has no cron for it
        new = cron_supervisor(redis_url, jobs)
        new.wait_ready()
        removed_at = time.time()
        assert schedules(redis_url) == {}
        time.sleep(1.5)
        assert schedules(redis_url) == {}  # the old supervisor did not put it back
        late = [enq for enq, _ in runs_of(out) if enq > removed_at]
        assert late == []
    finally:
        old.stop()
        if new:
            new.stop()


def test_an_older_supervisor_keeps_firing_a_job_the_newer_one_does_not_have(
        redis_url: str, tmp_path: Path) -> None:
    """A rolling deploy whose new version deletes the job file: the new version could not
    have loaded the job, so it keeps the schedule, and the old version fires it while it runs."""
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    new_jobs = tmp_path / "new_jobs"
    cron_job(jobs, "tick", "*/1 * * * * *", out)
    write_job(new_jobs, "unrelated", "")
    old = cron_supervisor(redis_url, jobs)
    new = None
    try:
        old.wait_ready()
        new = cron_supervisor(redis_url, new_jobs)
        new.wait_ready()
        started_at = time.time()
        row = schedules(redis_url)["tick"]
        assert not row["loaded_by_newest"]
        wait_for(lambda: any(enq > started_at + 1 for enq, _ in runs_of(out)), timeout_s=5)
    finally:
        old.stop()
        if new:
            new.stop()


def test_after_an_outage_a_schedule_catches_up_with_one_run_not_a_burst(
        redis_url: str, redis_client: Any, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "hourly", "0 * * * *", out)
    cron_job(jobs, "fresh", "0 * * * *", out)
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        pass  # synced the schedules, fired nothing: nothing is due since they exist
    assert runs_of(out) == []
    # as if the schedule's last run was five hours ago and no supervisor ran since
    raw = json.loads(redis_client.hget(KEYS.cron("default"), "hourly"))
    five_hours_ago = raw["since"] - 5 * 3600_000
    raw["since"] = raw["last"] = five_hours_ago
    redis_client.hset(KEYS.cron("default"), "hourly", json.dumps(raw))
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        wait_for(lambda: len(runs_of(out)) == 1)
        time.sleep(0.5)
        rows = schedules(redis_url)
    assert len(runs_of(out)) == 1
    assert rows["hourly"]["runs"] == 1
    assert rows["hourly"]["last_tick_ms"] == Schedule(
        "default", "hourly", "0 * * * *", "UTC").tick_at_or_before(int(time.time() * 1000))
    assert rows["fresh"]["runs"] == 0


def test_a_singleton_cron_job_skips_ticks_while_its_previous_run_is_in_flight(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "busy", "*/1 * * * * *", out, extra="singleton = True", seconds=1.3)
    seen_skipped = []
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        deadline = time.monotonic() + 2.8
        while time.monotonic() < deadline:
            row = schedules(redis_url).get("busy", {})
            if row.get("last_outcome") == "skipped":
                seen_skipped.append(row)
            time.sleep(0.1)
    starts = sorted(start for _, start in runs_of(out))
    assert 1 <= len(starts) <= 2
    assert all(b - a >= 1.3 for a, b in zip(starts, starts[1:], strict=False))  # no overlap
    assert seen_skipped, "no tick was recorded as skipped"
    assert seen_skipped[0]["skips"] >= 1
    assert "in flight" in " ".join(_describe(seen_skipped[0]))


def _describe(row: dict[str, Any]) -> tuple[str, ...]:
    from sandboxrunner.listings import describe_schedule

    return describe_schedule(row)


def test_a_cron_job_can_still_be_run_by_hand(redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "new_year", "0 0 1 1 *", out, tag="scheduled")
    with running_supervisor(redis_url, jobs_dir=str(jobs)), \
            client_for(redis_url, jobs_dir=str(jobs)) as client:
        assert client.run_job("new_year", {"file": str(out), "tag": "by hand"})["tag"] == "by hand"
    assert len(runs_of(out)) == 1
    assert schedules(redis_url)["new_year"]["runs"] == 0  # a manual run is not a tick


def test_a_priority_only_supervisor_fires_priority_cron_jobs_and_leaves_default_alone(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "urgent_tick", "*/1 * * * * *", out, extra="worker = 'priority'")
    cron_job(jobs, "default_tick", "*/1 * * * * *", tmp_path / "default.txt")
    store = Store(make_config(redis_url), redis_url)
    store.cron_sync("default", "other-host", [("default_tick", "*/1 * * * * *", "UTC", 0, "")])
    store.close()
    with running_supervisor(redis_url, jobs_dir=str(jobs), workers="priority"):
        wait_for(lambda: len(runs_of(out)) >= 1, timeout_s=3)
    rows = schedules(redis_url)
    assert rows["urgent_tick"]["queue"] == "priority"
    assert rows["default_tick"]["queue"] == "default"  # not removed by a priority supervisor
    assert not (tmp_path / "default.txt").exists()  # nobody serves default: never fired


def test_a_cron_job_whose_singleton_key_fails_on_its_data_is_listed_with_the_error(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "bad_key", "*/1 * * * * *", out,
             extra="def singleton(data):\n    return data['user']\n")
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        time.sleep(1.1)
    row = schedules(redis_url)["bad_key"]
    assert "raised KeyError" in row["error"] and row["runs"] == 0
    assert runs_of(out) == []


def test_schedules_come_back_after_redis_loses_them(
        redis_url: str, redis_client: Any, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "tick", "*/1 * * * * *", out)
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        assert "tick" in schedules(redis_url)
        redis_client.flushall()
        flushed_at = time.time()
        wait_for(lambda: "tick" in schedules(redis_url), timeout_s=3)
        # the tick that found the schedules gone is lost; the next one fires
        wait_for(lambda: any(enq > flushed_at for enq, _ in runs_of(out)), timeout_s=3)


def cli(args: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandboxrunner", *args], cwd=cwd,
                          env=supervisor_env(env.pop("redis_url", ""), **env),
                          capture_output=True, text=True, timeout=30)


def block_of(lines: list[str], heading: str) -> list[str]:
    """The detail block of one schedule: its heading line and the indented lines below."""
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")),
               len(lines))
    return lines[start:end]


def test_jobs_shows_each_schedule_in_words_with_its_next_fire_times_and_warnings(
        tmp_path: Path) -> None:
    jobs, out = tmp_path / "worker_jobs", tmp_path / "runs.txt"
    cron_job(jobs, "nightly", "30 2 * * *", out)
    cron_job(jobs, "tick", "*/2 * * * * *", out)
    write_job(jobs, "plain", "")
    done = cli(["jobs"], cwd=tmp_path, SANDBOXRUNNER_JOBS_DIR=str(jobs))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    nightly = block_of(lines, "nightly: ")
    assert nightly[0] == "nightly: At 02:30 (UTC)"
    nexts = nightly[1].removeprefix("  next: ").split(", ")
    assert len(nexts) == 3 and all(t.endswith(" 02:30:00 UTC") for t in nexts)
    tick = block_of(lines, "tick: ")
    assert tick[0] == "tick: Every second, every 2 minutes (UTC)"
    assert tick[2].startswith("  warning: cron pattern '*/2 * * * * *' has six fields")
    assert "write '* * * * * */2'" in tick[2]
    assert not any(line.startswith("plain: ") for line in lines)
    assert "tick.py): cron pattern '*/2 * * * * *' has six fields" in done.stderr  # the log


def test_cron_shows_words_next_fire_times_and_says_when_no_supervisor_serves_a_queue(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "nightly", "30 2 * * *", out)
    cron_job(jobs, "urgent", "* * * * * */10", out, extra="worker = 'priority'")
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        pass  # synced both schedules, then stopped: nobody serves either queue any more
    default_only = SupervisorProcess(redis_url, ["--workers", "default"],
                                     SANDBOXRUNNER_JOBS_DIR=str(jobs))
    try:
        default_only.wait_ready()
        done = cli(["cron"], redis_url=redis_url)
    finally:
        default_only.stop()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:5] == ["queue", "job", "pattern", "tz", "next"]
    nightly_row = next(line for line in lines if " nightly " in line)
    assert "30 2 * * *" in nightly_row and " 02:30:00 UTC" in nightly_row
    urgent_row = next(line for line in lines if line.startswith("priority ") and " urgent " in line)
    assert "none: no supervisor serves priority" in urgent_row
    assert block_of(lines, "nightly (default): ")[0] == "nightly (default): At 02:30 (UTC)"
    urgent = block_of(lines, "urgent (priority): ")
    assert urgent[0] == "urgent (priority): Every 10 seconds (UTC)"
    assert urgent[1].startswith("  next: none: no supervisor serves priority")


def test_cron_shows_a_schedule_nobody_fires_as_overdue_and_not_loaded_by_the_newest(
        redis_url: str, redis_client: Any, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "cleanup", "*/5 * * * *", out)
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        pass
    raw = json.loads(redis_client.hget(KEYS.cron("default"), "cleanup"))
    raw["next"] -= 3600_000  # as if nobody fired it for an hour
    redis_client.hset(KEYS.cron("default"), "cleanup", json.dumps(raw))
    other = tmp_path / "other"
    write_job(other, "unrelated", "")
    with running_supervisor(redis_url, jobs_dir=str(other)) as newest:
        done = cli(["cron"], redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "overdue" in next(line for line in lines if " cleanup " in line)
    block = block_of(lines, "cleanup (default): ")
    assert block[1].startswith("  next: none: overdue since ")
    assert block[1].endswith("no live supervisor of default fires it")
    assert block[2] == (f"  not loaded by the newest supervisor of default ({newest.sid}), "
                        "which has no job cleanup; it is fired only by supervisors that have "
                        "the job. Gone for good? sandboxrunner cron --remove cleanup")


def test_cron_remove_deletes_a_schedule_and_refuses_an_unknown_one(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "cleanup", "*/5 * * * *", out)
    cron_job(jobs, "nightly", "30 2 * * *", out)
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        pass
    done = cli(["cron", "--remove", "cleanup"], redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Removed cron schedule cleanup of default\n"
    assert sorted(schedules(redis_url)) == ["nightly"]
    again = cli(["cron", "--remove", "cleanup"], redis_url=redis_url)
    assert again.returncode == 2
    assert again.stderr == ("error: no cron schedule cleanup in Redis (queues default, "
                            "priority); `sandboxrunner cron` lists them\n")


def test_ticks_are_logged_at_debug_and_sync_changes_at_info(
        redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "tick", "*/1 * * * * *", out)
    cron_job(jobs, "busy", "*/1 * * * * *", out, extra="singleton = True", seconds=2.5)
    with caplog.at_level("DEBUG", logger="sandboxrunner.cron"), \
            running_supervisor(redis_url, jobs_dir=str(jobs)):
        wait_for(lambda: len(runs_of(out)) >= 3 and schedules(redis_url)["busy"]["skips"] >= 2)
    cron_records = [r for r in caplog.records if r.name == "sandboxrunner.cron"]
    info = [r.getMessage() for r in cron_records if r.levelno >= logging.INFO]
    debug = [r.getMessage() for r in cron_records if r.levelno == logging.DEBUG]
    assert {"cron schedule busy of default synced",
            "cron schedule tick of default synced"} <= set(info)
    assert sum("queued as job" in m for m in debug) >= 2
    assert not any("queued as job" in m for m in info)
    # a skip is worth one INFO line when a streak of skips starts, not one per tick
    skipped_info = [m for m in info if "skipped" in m]
    assert skipped_info and all("cron busy: tick" in m for m in skipped_info)
    assert len(skipped_info) < sum("skipped" in m for m in info + debug)


def test_the_scheduler_sleeps_between_ticks_instead_of_polling(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "tick", "*/1 * * * * *", out)
    with running_supervisor(redis_url, jobs_dir=str(jobs)) as sup:
        store = sup.cron._store
        calls = []
        original = store.cron_fire
        store.cron_fire = lambda run: calls.append(run.tick_ms) or original(run)  # type: ignore
        time.sleep(2.0)
    assert 1 <= len(calls) <= 3  # one script call per tick, not a polling loop
    assert all(b - a == 1000 for a, b in zip(calls, calls[1:], strict=False))
