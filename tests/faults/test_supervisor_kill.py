"""A supervisor SIGKILLed with jobs running, in thread mode and in process mode.

Two `sandboxrunner start` subprocesses serve one queue; callers wait on ten jobs and a
singleton; one supervisor is killed while it runs some of them. Every caller must get
its result from the other supervisor, each job must run at most 1 + max_stalled times
(only jobs the killed one was running run twice), the singleton's claim must be released,
nothing may stay queued or leased, and in process mode the killed supervisor's children
must be gone: no orphan keeps running a job that now runs elsewhere.
"""

from __future__ import annotations

import concurrent.futures
import signal
import time
from pathlib import Path

import psutil
import pytest
import redis

from tests.faults.common import (
    job_lines,
    leftovers,
    singleton_claims,
    starts,
    stats,
    wait_for,
)
from tests.supervisors import SupervisorProcess, client_for

JOBS = 10
MAX_STALLED = 1  # the default


def _alive_children(pid: int) -> list[int]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k.pid for k in kids if _alive(k.pid)]


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _start_pair(redis_url: str, mode: list[str]) -> tuple[SupervisorProcess, SupervisorProcess]:
    env = {"SANDBOXRUNNER_CONCURRENCY": "3", "WORKERS": "default"}
    pair = (SupervisorProcess(redis_url, mode, **env), SupervisorProcess(redis_url, mode, **env))
    for sup in pair:
        sup.wait_ready()
    return pair


@pytest.mark.parametrize("mode", [[], ["--separate-process"]], ids=["threads", "processes"])
def test_a_killed_supervisors_jobs_run_once_more_elsewhere_and_every_caller_gets_its_result(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path, mode: list[str]) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    victim, survivor = _start_pair(redis_url, mode)
    try:
        with client_for(redis_url) as client, \
                concurrent.futures.ThreadPoolExecutor(JOBS + 1) as callers:
            calls = [callers.submit(client.run_job, "fault_work",
                                    {"dir": str(runs), "seconds": 1.5}, wait_timeout=30_000)
                     for _ in range(JOBS)]
            single = callers.submit(client.run_job, "single_keyed",
                                    {"key": "k", "seconds": 1.5, "file": str(tmp_path / "s")},
                                    wait_timeout=30_000)
            # the victim runs jobs (its pids, or its children's) when it is killed
            victim_pids = {victim.proc.pid}

            def victim_busy() -> bool:
                victim_pids.update(_alive_children(victim.proc.pid))
                return any(x.pid in victim_pids for lines in job_lines(runs).values()
                           for x in starts(lines))

            wait_for(victim_busy, what="the victim to run a job")
            children = _alive_children(victim.proc.pid)
            victim_pids.update(children)
            victim.signal(signal.SIGKILL)
            killed_at = time.time()
            victim.wait()
            results = [c.result(timeout=30) for c in calls]
            single_result = single.result(timeout=30)
            if children:  # process mode: they die with their supervisor (PDEATHSIG)
                wait_for(lambda: not any(_alive(p) for p in children), timeout_s=3,
                         what="the killed supervisor's children to die")
            time.sleep(0.2)  # a surviving orphan would write another tick meanwhile
            lines = job_lines(runs)
            after_kill = client.run_job("single_keyed", {"key": "k", "file": str(tmp_path / "s")})

        assert len(results) == JOBS and all(r["job"] in lines for r in results)
        assert single_result["job"] != after_kill["job"]  # the claim was released
        survivor_pids = {survivor.proc.pid, *_alive_children(survivor.proc.pid)}
        twice = 0
        for job_id, job in lines.items():
            runs_of_job = starts(job)
            assert 1 <= len(runs_of_job) <= 1 + MAX_STALLED, (job_id, job)
            assert [x.word for x in job].count("end") == 1, (job_id, job)
            if len(runs_of_job) == 2:
                twice += 1
                assert runs_of_job[0].pid in victim_pids
                assert runs_of_job[1].pid in survivor_pids
            # nothing the killed supervisor ran went on after the kill
            late = [x for x in job if x.pid in victim_pids and x.at > killed_at + 0.1]
            assert late == [], (job_id, late)
        assert twice >= 1
        counters = stats(redis_client)
        assert counters["completed"] == JOBS + 2 and counters["failed"] == 0
        assert counters["stalled"] >= twice
        assert set(leftovers(redis_client).values()) == {0}
        assert singleton_claims(redis_client) == []
        if children:
            assert all(not _alive(p) for p in children)
    finally:
        victim.stop()
        survivor.stop()
        assert not _alive(victim.proc.pid)
