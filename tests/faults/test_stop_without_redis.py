"""A supervisor stopped while Redis is stalled or gone: the stop stays bounded.

A SIGTERM drains for at most grace_period, and the last writes (outcomes, hand-back) get a
small bound more, whatever Redis answers: a server in `DEBUG SLEEP` does not answer at all,
a server that is gone refuses every connection. The outcomes that could not be written are
logged with their job ids; those jobs stay in the stopped supervisor's lease, which brings
them back: they run again on another supervisor once it lapses, and every caller gets an
outcome.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import redis

from sandboxrunner.supervisor import STOP_WRITES_S
from sandboxrunner.testserver import TestServer
from tests.faults.common import job_lines, starts, wait_for
from tests.supervisors import SupervisorProcess, client_for, running_supervisor

GRACE_MS = 1000
# grace_period, the last writes, and a generous margin for a loaded machine (the stop
# hung for good before: it retried the outcomes for as long as Redis did not take them)
STOP_BOUND_S = GRACE_MS / 1000 + STOP_WRITES_S + 2.0



def _supervisor(url: str) -> SupervisorProcess:
    sup = SupervisorProcess(url, ["--workers", "default", "--concurrency", "2"],
                            SANDBOXRUNNER_GRACE_PERIOD=str(GRACE_MS))
    sup.wait_ready()
    return sup


def _stop_and_time(sup: SupervisorProcess) -> tuple[int, float, str]:
    started = time.monotonic()
    sup.signal(signal.SIGTERM)
    code = sup.wait(timeout_s=STOP_BOUND_S + 10)
    return code, time.monotonic() - started, sup.output()


def _unwritten_ids(output: str) -> set[str]:
    lines = [x for x in output.splitlines() if re.search(r"outcome\(s\) of \w+ not written", x)]
    return {i for x in lines for i in re.findall(r"default-[0-9a-f]{32}", x)}


def test_a_stop_with_redis_gone_is_bounded_and_the_jobs_run_again_elsewhere(
        fresh_server: TestServer, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    url = fresh_server.url
    sup = _supervisor(url)
    try:
        with client_for(url) as client:
            handles = [client.enqueue("fault_work", {"dir": str(runs), "seconds": 0.5})
                       for _ in range(2)]
            wait_for(lambda: len(job_lines(runs)) == 2, what="both jobs to start")
            fresh_server.stop()  # saved (AOF): the jobs are in the supervisor's lease
            wait_for(lambda: all(x[-1].word == "end" for x in job_lines(runs).values()),
                     what="both jobs to end while Redis is gone")
            code, took_s, output = _stop_and_time(sup)
            assert code == 0, output
            assert took_s < STOP_BOUND_S, output
            assert _unwritten_ids(output) == {h.id for h in handles}, output
            assert "Traceback" not in output, output
            fresh_server.restart()
            # the lease of the stopped supervisor lapses; another takes its jobs back
            with running_supervisor(url, workers="default"):
                results = [h.result(wait_timeout=20_000) for h in handles]
    finally:
        sup.stop()
    assert [r["attempt"] for r in results] == [2, 2]
    assert all(len(starts(lines)) == 2 for lines in job_lines(runs).values())


def test_a_stop_with_redis_stalled_is_bounded_and_no_outcome_is_lost(
        debug_server: TestServer, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    url = debug_server.url
    sup = _supervisor(url)
    stall_s = STOP_BOUND_S + 3  # the server still sleeps when the stop must be over
    try:
        with client_for(url) as client, \
                redis.Redis.from_url(url, socket_timeout=stall_s + 10) as r:
            handles = [client.enqueue("fault_work", {"dir": str(runs), "seconds": 0.5})
                       for _ in range(2)]
            wait_for(lambda: len(job_lines(runs)) == 2, what="both jobs to start")
            stall = threading.Thread(
                target=lambda: r.execute_command("DEBUG", "SLEEP", str(stall_s)))
            stall.start()
            stalled_at = time.monotonic()
            wait_for(lambda: all(x[-1].word == "end" for x in job_lines(runs).values()),
                     what="both jobs to end while Redis sleeps")
            code, took_s, output = _stop_and_time(sup)
            stall_left_s = stall_s - (time.monotonic() - stalled_at)
            assert code == 0, output
            assert took_s < STOP_BOUND_S, output
            assert stall_left_s > 0  # the stop did not wait for the server to wake
            assert _unwritten_ids(output) == {h.id for h in handles}, output
            stall.join()
            # the finish sent before the stall may land late; if not, the lease brings
            # the jobs back: either way every caller gets an outcome, none is lost
            with running_supervisor(url, workers="default"):
                results = [h.result(wait_timeout=20_000) for h in handles]
    finally:
        sup.stop()
    assert all(r["job"] == h.id for r, h in zip(results, handles, strict=True))
    assert all(1 <= len(starts(lines)) <= 2 for lines in job_lines(runs).values())
