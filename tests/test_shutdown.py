"""The supervisor's stop, driven by real signals to `sandboxrunner start` subprocesses:
an idle one exits at once; a first signal drains (saying for how long and for how many
jobs), a second stops now; jobs still running are handed back, which is not a crash."""

from __future__ import annotations

import signal
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import redis

from sandboxrunner import JobFailed
from sandboxrunner.keys import Keys
from sandboxrunner.snapshot import SnapshotReader
from tests.deployments import every_deployment
from tests.supervisors import SupervisorProcess, client_for, make_config, wait_for

K = Keys("sr")
MODES = {"threads": [], "processes": ["--separate-process"]}


def _runs(folder: Path, job_id: str) -> list[tuple[int, int]]:
    path = folder / job_id
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(pid), int(grandchild)) for pid, grandchild in (x.split() for x in lines)]


def _is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _logged_s(output: str, first: str, last: str) -> float:
    """Seconds between the supervisor's log lines containing FIRST and LAST."""
    def at(words: str) -> datetime:
        line = next(line for line in output.splitlines() if words in line)
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return (at(last) - at(first)).total_seconds()


def _supervisor(redis_url: str, mode: str, *args: str, **env: str) -> SupervisorProcess:
    sup = SupervisorProcess(redis_url, ["--workers", "default", "--concurrency", "2",
                                        *MODES[mode], *args], **env)
    sup.wait_ready()
    return sup


@every_deployment  # in a cluster the queues block on two nodes: each is unblocked on its own
@pytest.mark.parametrize("mode", MODES)
def test_an_idle_supervisor_exits_promptly_on_sigterm(redis_url: str,
                                                             mode: str) -> None:
    sup = _supervisor(redis_url, mode)
    try:
        time.sleep(0.5)  # blocked on the empty queue, about half its 1 s block to go
        started = time.monotonic()
        sup.signal(signal.SIGTERM)
        assert sup.wait() == 0
        output = sup.output()
        assert time.monotonic() - started < 5, output  # the process exits, too
        # from the signal to the end of the stop, by the supervisor's own log (the exit of
        # a loaded machine's interpreter is not the stop): 0.02-0.1 s here; waiting the
        # block out took 0.55-1 s
        assert _logged_s(output, "received SIGTERM", "stopped") < 0.5, output
        assert "no job running" in output
    finally:
        sup.stop()


@pytest.mark.parametrize("mode", MODES)
def test_a_second_ctrl_c_stops_now_and_hands_the_running_jobs_back(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path, mode: str) -> None:
    sup = _supervisor(redis_url, mode)
    other = None
    try:
        with client_for(redis_url) as client:
            handles = [client.enqueue("shutdown_work", {"dir": str(tmp_path), "seconds": 60,
                                                        "grandchild": mode == "processes"})
                       for _ in range(2)]
            wait_for(lambda: all(_runs(tmp_path, h.id) for h in handles), what="both jobs")
            sup.signal(signal.SIGINT)
            time.sleep(0.3)  # draining
            assert sup.proc.poll() is None
            started = time.monotonic()
            sup.signal(signal.SIGINT)
            assert sup.wait() == 130  # 128 + SIGINT
            assert time.monotonic() - started < 2.0
            output = sup.output()
            assert ("draining: waiting up to 30 s for 2 running job(s); press Ctrl-C again "
                    "to stop now") in output, output
            assert "stopping now" in output, output
            assert "Traceback" not in output, output
            # back in the queue, not failed, not counted as stalls
            assert redis_client.llen(K.wait("default")) == 2
            for handle in handles:
                record = redis_client.hgetall(K.job(handle.id))
                assert record[b"status"] == b"queued" and record.get(b"stalled", b"0") == b"0"
            if mode == "processes":  # the children and everything they started are gone
                pids = [pid for h in handles for pair in _runs(tmp_path, h.id) for pid in pair]
                wait_for(lambda: all(_is_gone(pid) for pid in pids), timeout_s=2,
                         what="the children and their subprocesses to be gone")
            other = _supervisor(redis_url, mode)
            assert [h.result(wait_timeout=10_000) for h in handles] == [{"runs": 2}] * 2
    finally:
        sup.stop()
        if other:
            other.stop()


def test_a_job_handed_back_at_the_end_of_the_grace_is_not_a_stall(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    no_stalls = {"SANDBOXRUNNER_MAX_STALLED": "0"}
    sup = _supervisor(redis_url, "threads", SANDBOXRUNNER_GRACE_PERIOD="300", **no_stalls)
    other = None
    try:
        with client_for(redis_url) as client:
            handle = client.enqueue("shutdown_work", {"dir": str(tmp_path), "seconds": 60})
            wait_for(lambda: _runs(tmp_path, handle.id), what="the job to start")
            sup.signal(signal.SIGTERM)
            assert sup.wait() == 0
            output = sup.output()
            assert "handed 1 running job(s) of default back" in output, output
            assert "stalled" not in output and "crashed" not in output, output
            other = _supervisor(redis_url, "threads", **no_stalls)
            assert handle.result(wait_timeout=10_000) == {"runs": 2}
        record = redis_client.hgetall(K.job(handle.id))
        assert record[b"handed_back"] == b"1" and record.get(b"stalled", b"0") == b"0"
        stats = redis_client.hgetall(K.stats("default"))
        assert stats[b"handed_back"] == b"1" and b"stalled" not in stats
        snapshot = SnapshotReader(make_config(redis_url), redis_url)
        queue = {q.name: q for q in snapshot.read().queues}["default"]
        snapshot.close()
        assert (queue.handed_back, queue.stalled) == (1, 0)
    finally:
        sup.stop()
        if other:
            other.stop()


def test_a_supervisor_that_dies_is_still_reported_as_a_crash(
        redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    no_stalls = {"SANDBOXRUNNER_MAX_STALLED": "0"}
    sup = _supervisor(redis_url, "threads", **no_stalls)
    other = None
    try:
        with client_for(redis_url) as client:
            handle = client.enqueue("shutdown_work", {"dir": str(tmp_path), "seconds": 60})
            wait_for(lambda: _runs(tmp_path, handle.id), what="the job to start")
            sup.signal(signal.SIGKILL)
            sup.wait()
            other = _supervisor(redis_url, "threads", **no_stalls)
            with pytest.raises(JobFailed) as info:
                handle.result(wait_timeout=10_000)
        assert info.value.error_type == "JobStalled"
        assert "crashed or was killed" in info.value.error_message
        record = redis_client.hgetall(K.job(handle.id))
        assert record[b"stalled"] == b"1" and b"handed_back" not in record
    finally:
        sup.stop()
        if other:
            other.stop()


def test_a_redis_user_without_client_commands_still_fetches_and_stops(
        redis_url: str, redis_client: redis.Redis) -> None:
    # CLIENT ID/UNBLOCK only shorten a stop: without them (an ACL), all else works
    redis_client.acl_setuser("no_client", enabled=True, passwords=["+pw"], keys=["*"],
                             channels=["*"], commands=["+@all", "-client"])
    limited = redis_url.replace("redis://", "redis://no_client:pw@")
    try:
        sup = _supervisor(limited, "threads")
        try:
            with client_for(redis_url) as client:
                assert client.run_job("echo", 1, wait_timeout=10_000)["echo"] == 1
            sup.signal(signal.SIGTERM)
            assert sup.wait() == 0
            output = sup.output()
            assert "Traceback" not in output and "Redis failed" not in output, output
        finally:
            sup.stop()
    finally:
        redis_client.acl_deluser("no_client")
