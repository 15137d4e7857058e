"""Running a cron job now: enqueued as its next tick would be (its queue, its cron data,
its singleton rule), counted in its schedule as a manual run that the snapshot's cron rows
and `sandboxrunner cron` show, its ticks untouched; an unknown name, a job without cron or
a schedule not synced yet is a clear error that writes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

from sandboxrunner import (
    CronScheduleNotFound,
    InvalidJobState,
    UnknownJob,
    arun_cron_now,
    run_cron_now,
)
from sandboxrunner.cron_state import list_schedules
from sandboxrunner.keys import Keys
from sandboxrunner.snapshot import SnapshotReader
from sandboxrunner.store import Store
from tests.clirun import one_error_line, run_cli
from tests.deployments import every_deployment
from tests.supervisors import client_for, make_config, running_supervisor, wait_for
from tests.test_cron import cron_job, runs_of, write_job

K = Keys("sr")


def _schedules(redis_url: str) -> dict[str, dict[str, Any]]:
    store = Store(make_config(redis_url), redis_url)
    try:
        return {row["job"]: row for row in list_schedules(store)}
    finally:
        store.close()


@every_deployment
def test_a_cron_job_runs_now_with_its_cron_data_and_counts_as_a_manual_run(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "new_year", "0 0 1 1 *", out, tag="scheduled")
    cron_job(jobs, "urgent_year", "0 0 1 1 *", tmp_path / "urgent.txt",
             extra="worker = 'priority'")
    with running_supervisor(redis_url, jobs_dir=str(jobs)), \
            client_for(redis_url, jobs_dir=str(jobs)) as client:
        before = _schedules(redis_url)["new_year"]
        job_id = client.run_cron_now("new_year")
        assert job_id.startswith("default-")
        assert client.get_result(job_id, wait_timeout=10_000)["tag"] == "scheduled"
        urgent_id = run_cron_now("urgent_year")
        assert urgent_id.startswith("priority-")
        wait_for(lambda: runs_of(tmp_path / "urgent.txt"), what="the priority run")
        row = _schedules(redis_url)["new_year"]
        reader = SnapshotReader(make_config(redis_url), redis_url)
        try:
            shown = {c.job: c for c in reader.read().cron}
        finally:
            reader.close()
    assert len(runs_of(out)) == 1
    assert (row["manual_runs"], row["last_manual_job_id"]) == (1, job_id)
    assert row["last_manual_ms"] and row["last_manual_ms"] >= row["synced_at_ms"]
    # its ticks are untouched: the next tick still fires as scheduled
    assert (row["runs"], row["last_tick_ms"], row["next_ms"]) == (
        before["runs"], before["last_tick_ms"], before["next_ms"])
    assert (shown["new_year"].manual_runs, shown["new_year"].last_manual_job_id) == (1, job_id)
    assert shown["urgent_year"].manual_runs == 1


def test_a_singleton_cron_job_in_flight_is_not_run_again(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "busy", "0 0 1 1 *", out, extra="singleton = True", seconds=0.5)
    with running_supervisor(redis_url, jobs_dir=str(jobs)), \
            client_for(redis_url, jobs_dir=str(jobs)) as client:
        first = client.run_cron_now("busy")
        with pytest.raises(InvalidJobState) as refused:
            client.run_cron_now("busy")
        assert first in str(refused.value) and "in flight" in str(refused.value)
        client.get_result(first, wait_timeout=10_000)
        second = client.run_cron_now("busy")  # settled: it runs again
        client.get_result(second, wait_timeout=10_000)
    row = _schedules(redis_url)["busy"]
    assert (row["manual_runs"], row["last_manual_job_id"]) == (2, second)
    assert len(runs_of(out)) == 2


def test_an_unknown_name_a_job_without_cron_or_an_unsynced_schedule_writes_nothing(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    cron_job(jobs, "nightly", "30 2 * * *", tmp_path / "runs.txt")
    write_job(jobs, "plain", "")
    with client_for(redis_url, jobs_dir=str(jobs)) as client:
        with pytest.raises(UnknownJob) as unknown:
            client.run_cron_now("nope")
        assert "nightly" in str(unknown.value)
        with pytest.raises(CronScheduleNotFound) as plain:
            client.run_cron_now("plain")
        assert "has no cron" in str(plain.value) and "sandboxrunner run plain" in str(
            plain.value)
        with pytest.raises(CronScheduleNotFound) as unsynced:
            client.run_cron_now("nightly")  # no supervisor ever synced it
        assert "no cron schedule nightly in Redis" in str(unsynced.value)
    assert redis_client.dbsize() == 0


def test_the_async_twin(redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "jobs", tmp_path / "runs.txt"
    cron_job(jobs, "new_year", "0 0 1 1 *", out)
    with running_supervisor(redis_url, jobs_dir=str(jobs)), \
            client_for(redis_url, jobs_dir=str(jobs)) as client:

        async def main() -> str:
            try:
                return await arun_cron_now("new_year")
            finally:
                await client.aclose()

        job_id = asyncio.run(main())
        client.get_result(job_id, wait_timeout=10_000)
    assert _schedules(redis_url)["new_year"]["manual_runs"] == 1


def test_the_cli_runs_a_cron_job_now_and_cron_shows_the_manual_run(
        redis_url: str, tmp_path: Path) -> None:
    jobs, out = tmp_path / "worker_jobs", tmp_path / "runs.txt"
    cron_job(jobs, "nightly", "30 2 * * *", out)
    write_job(jobs, "plain", "")
    with running_supervisor(redis_url, jobs_dir=str(jobs)):
        done = run_cli(["cron", "--run", "nightly"], tmp_path, REDIS_URL=redis_url)
        assert done.returncode == 0, done.stderr
        line = done.stdout.strip()
        assert line.startswith("queued nightly (default) now as job default-"), line
        wait_for(lambda: runs_of(out), what="the run")
        listed = run_cli(["cron"], tmp_path, REDIS_URL=redis_url)
    assert listed.returncode == 0, listed.stderr
    job_id = line.split(" as job ")[1].split()[0].rstrip(":")
    assert any(row.startswith("  run by hand: 1 time, last at ") and job_id in row
               for row in listed.stdout.splitlines()), listed.stdout
    for args, says in ((["cron", "--run", "plain"], "has no cron"),
                       (["cron", "--run", "nope"], "unknown job 'nope'"),
                       (["cron", "--run", "nightly", "--remove", "nightly"], "not both")):
        refused = run_cli(args, tmp_path, REDIS_URL=redis_url)
        assert refused.returncode == 2, refused.stderr
        assert says in one_error_line(refused)
