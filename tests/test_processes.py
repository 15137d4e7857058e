"""Process mode end to end: real forked children, real Redis, real kills.

Every test drives a real supervisor (`running_supervisor(..., use_separate_process=True)`)
and checks processes with psutil. A grandchild orphaned by a kill is reparented to init;
where init does not reap (some containers), it lingers as a zombie, which counts as gone.
Our own children (the fork server) and theirs must be reaped: a zombie whose parent is
this process or its fork server fails the test. The fork server itself (where children
come from, its death) is tested in tests/test_forkserver.py.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from sandboxrunner import JobFailed, JobTimeout, registry
from sandboxrunner.executors import forkserver, pool, processes
from sandboxrunner.joblog import read_job_log
from sandboxrunner.keys import Keys
from sandboxrunner.registry import load_registry
from tests.deployments import every_deployment
from tests.supervisors import (
    SupervisorProcess,
    client_for,
    make_config,
    running_supervisor,
    wait_for,
)

PROC = {"use_separate_process": True, "concurrency": 2, "workers": "default"}




def is_gone(pid: int) -> bool:
    """Dead and reaped, or an orphan zombie that init (not we) must reap."""
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
        parent = proc.parent()
        return parent is None or os.getpid() not in (parent.pid, parent.ppid())
    except psutil.NoSuchProcess:
        return True


def read_pids(path: Path) -> list[int]:
    text = wait_for(lambda: path.exists() and path.read_text(), what=f"pids in {path}")
    return [int(p) for p in text.split()]


def live_children(supervisor: Any, queue: str = "default") -> list[dict[str, Any]]:
    snap = supervisor.executors[queue].snapshot()
    return [c for c in snap["children"] if c["state"] in ("idle", "busy")]


def pool_full(supervisor: Any, size: int = 2) -> bool:
    return len([c for c in live_children(supervisor) if c["state"] == "idle"]) == size


# -- results ---------------------------------------------------------------------------


def test_results_and_errors_round_trip_through_a_child(redis_url: str) -> None:
    with running_supervisor(redis_url, **PROC), client_for(redis_url) as client:
        assert client.run_job("echo", {"a": 1}) == {"echo": {"a": 1}, "attempt": 1,
                                                     "queue": "default"}
        assert client.run_job("async_echo", [1, 2]) == {"async_echo": [1, 2]}
        ran = client.run_job("proc_pid")
        server_parent = psutil.Process(ran["ppid"]).ppid()  # ran["ppid"]: our fork server
        with pytest.raises(JobFailed) as info:
            client.run_job("fail", {"card": "4242"})
        with pytest.raises(JobFailed, match="not JSON-serialisable"):
            client.run_job("not_json")
    assert ran["pid"] != os.getpid()
    assert server_parent == os.getpid()
    assert ran["pgid"] == ran["pid"]  # leads its own group: a kill takes its whole tree
    assert info.value.error_type == "PaymentDeclined"
    assert "card 4242 declined" in info.value.error_message
    assert "tests/jobs/fail.py" in info.value.remote_traceback


def test_a_stopped_supervisor_reaps_all_its_children(redis_url: str) -> None:
    with running_supervisor(redis_url, **PROC) as sup:
        wait_for(lambda: pool_full(sup), what="a full pool")
        pids = [c["pid"] for c in live_children(sup)]
    assert len(pids) == 2
    assert all(not psutil.pid_exists(pid) for pid in pids)  # reaped, not zombies


# -- deadlines -------------------------------------------------------------------------


@every_deployment
@pytest.mark.parametrize("how", ["sleep", "c_call", "catch_all"])
def test_a_job_past_its_timeout_is_killed_and_replaced(redis_url: str, tmp_path: Path,
                                                       how: str) -> None:
    pid_file = tmp_path / "pid"
    with running_supervisor(redis_url, **PROC) as sup, client_for(redis_url) as client:
        wait_for(lambda: pool_full(sup), what="a full pool")
        started = time.monotonic()
        with pytest.raises(JobTimeout) as info:
            client.run_job("proc_hang", {"file": str(pid_file), "how": how}, timeout=200)
        elapsed = time.monotonic() - started
        pid = read_pids(pid_file)[0]
        wait_for(lambda: is_gone(pid), what=f"child {pid} to be gone")
        assert not psutil.pid_exists(pid)  # reaped (by the fork server), not a zombie
        wait_for(lambda: pool_full(sup), timeout_s=1, what="the pool to be full again")
        after = client.run_job("proc_pid")
    assert 0.2 <= elapsed < 1.2
    assert "200 ms" in str(info.value) and f"pid {pid}" in str(info.value)
    assert after["pid"] != pid


def test_a_hung_job_leaves_no_grandchild_behind(redis_url: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    with running_supervisor(redis_url, **PROC), client_for(redis_url) as client:
        with pytest.raises(JobTimeout):
            client.run_job("proc_grandchildren", {"file": str(pid_file)}, timeout=300)
        pids = read_pids(pid_file)
        assert len(pids) == 3
        wait_for(lambda: all(is_gone(pid) for pid in pids), timeout_s=2,
                 what="every grandchild to be gone")


# -- a child dying on its own ----------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [
    ({"how": "segv"}, "SIGSEGV"),
    ({"how": "os_exit", "code": 3}, "exited with code 3"),
    ({"how": "sys_exit", "code": 5}, "exited with code 5"),
])
def test_a_child_that_dies_fails_its_job_clearly_and_is_replaced(
        redis_url: str, data: dict[str, Any], expected: str) -> None:
    with running_supervisor(redis_url, **PROC) as sup, client_for(redis_url) as client:
        wait_for(lambda: pool_full(sup), what="a full pool")
        before = {c["pid"] for c in live_children(sup)}
        with pytest.raises(JobFailed) as info:
            client.run_job("proc_crash", data)
        wait_for(lambda: pool_full(sup), timeout_s=1, what="the pool to be full again")
        after = {c["pid"] for c in live_children(sup)}
        assert client.run_job("echo", 1)["echo"] == 1
    assert expected in info.value.error_message
    assert info.value.error_type == "ChildCrashed"
    assert len(before - after) == 1 and len(after - before) == 1


def test_a_child_breaking_the_pipe_protocol_is_killed_and_replaced(redis_url: str) -> None:
    with running_supervisor(redis_url, **PROC) as sup, client_for(redis_url) as client:
        started = time.monotonic()
        with pytest.raises(JobFailed) as info:
            client.run_job("proc_garbage", timeout=5000)
        assert time.monotonic() - started < 2
        wait_for(lambda: pool_full(sup), timeout_s=1, what="the pool to be full again")
        assert client.run_job("echo", 2)["echo"] == 2
    assert info.value.error_type == "ChildProtocolError"


def test_children_dying_too_fast_back_off_instead_of_a_fork_storm(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger=pool.__name__)
    with running_supervisor(redis_url, **PROC) as sup, client_for(redis_url) as client:
        handles = [client.enqueue("proc_crash", {"how": "segv"}) for _ in range(40)]
        time.sleep(1.5)
        settled = 0
        for handle in handles:
            try:
                handle.result(wait_timeout=1)
            except JobFailed:
                settled += 1
            except Exception:  # noqa: BLE001 - WaitTimeout: held back by the backoff
                break
        assert sup.executors["default"].snapshot()["respawn_backoff_s"] > 0
    # without the guard all 40 crash in well under a second
    assert 10 <= settled < 30
    assert "crash loop" in caplog.text


def test_children_failing_to_initialise_back_off_and_no_job_is_lost(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger=pool.__name__)
    monkeypatch.setattr(pool, "RespawnLimiter",
                        functools.partial(pool.RespawnLimiter, max_delay_s=0.4))
    broken = tmp_path / "broken"
    broken.touch()
    monkeypatch.setenv("SR_TEST_BREAK_CHILDREN", str(broken))  # tests/jobs/fault_breaks_...
    with running_supervisor(redis_url, **PROC), client_for(redis_url) as client:
        handle = client.enqueue("echo", 4)
        time.sleep(1.0)
        failed = caplog.text.count("failed to initialise: RuntimeError: no database")
        assert "crash loop" in caplog.text
        broken.unlink()
        assert handle.result(wait_timeout=3000)["echo"] == 4
    # without the backoff, two children fail a few hundred times a second
    assert 10 <= failed < 30


# -- recycling and memory --------------------------------------------------------------


def test_max_jobs_per_child_replaces_a_child_after_n_jobs(redis_url: str) -> None:
    with running_supervisor(redis_url, **{**PROC, "concurrency": 1},
                            max_jobs_per_child=2), client_for(redis_url) as client:
        pids = [client.run_job("proc_pid")["pid"] for _ in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_max_memory_per_child_recycles_the_child_after_its_job(redis_url: str) -> None:
    with running_supervisor(redis_url, **{**PROC, "concurrency": 1},
                            max_memory_per_child=1), client_for(redis_url) as client:
        pids = [client.run_job("proc_pid")["pid"] for _ in range(3)]
    assert len(set(pids)) == 3


def test_memory_limit_kills_a_job_that_allocates_past_it(redis_url: str) -> None:
    limit_mib = psutil.Process().memory_info().rss // (1024 * 1024) + 100
    with running_supervisor(redis_url, **PROC, memory_limit_per_child=limit_mib) as sup, \
            client_for(redis_url) as client:
        started = time.monotonic()
        with pytest.raises(JobFailed) as info:
            client.run_job("proc_memory", {"mib": 300, "hold": 10}, timeout=20_000)
        assert time.monotonic() - started < 5
        wait_for(lambda: pool_full(sup), timeout_s=1, what="the pool to be full again")
        assert client.run_job("proc_memory", {"mib": 10}) == 10
    assert info.value.error_type == "MemoryLimitExceeded"
    assert f"memory_limit_per_child={limit_mib} MiB" in info.value.error_message


def test_memory_limit_is_watched_from_a_jobs_start_even_after_a_quick_job(
        redis_url: str) -> None:
    # the quick job leaves its 30 s deadline behind; the growing job's deadline is later,
    # yet the memory sampler must run from its start, not from that stale deadline's
    limit_mib = psutil.Process().memory_info().rss // (1024 * 1024) + 100
    with running_supervisor(redis_url, **{**PROC, "concurrency": 1},
                            memory_limit_per_child=limit_mib), client_for(redis_url) as client:
        client.run_job("proc_pid")
        started = time.monotonic()
        with pytest.raises(JobFailed) as info:
            client.run_job("proc_memory_grow", {"step_mib": 50, "every": 0.1,
                                                "max_mib": limit_mib + 300, "hold": 30},
                           wait_timeout=5000)
        assert time.monotonic() - started < 2.5  # ~0.3 s to pass the limit, then a sample
    assert info.value.error_type == "MemoryLimitExceeded"


def test_child_limits_cpu_seconds_fails_the_job_naming_the_limit(redis_url: str,
                                                                 tmp_path: Path) -> None:
    with running_supervisor(redis_url, **PROC, child_limits={"cpu_seconds": 1}), \
            client_for(redis_url) as client:
        with pytest.raises(JobFailed) as info:
            client.run_job("proc_hang", {"file": str(tmp_path / "pid"), "how": "spin"},
                           timeout=10_000)
        assert client.run_job("echo", 3)["echo"] == 3
    assert "SIGXCPU" in info.value.error_message
    assert "child_limits.cpu_seconds=1" in info.value.error_message


@pytest.mark.parametrize("what", ["files", "memory"])
def test_child_limits_make_a_job_fail_with_an_error_naming_the_limit(redis_url: str,
                                                                     what: str) -> None:
    vms_mib = psutil.Process().memory_info().vms // (1024 * 1024)
    limits = {"open_files": 200} if what == "files" else {"address_space_mib": vms_mib + 300}
    with running_supervisor(redis_url, **PROC, child_limits=limits), \
            client_for(redis_url) as client:
        with pytest.raises(JobFailed) as info:
            client.run_job("proc_limits", {"what": what, "mib": 4096})
        assert client.run_job("echo", 5)["echo"] == 5
    key = "open_files=200" if what == "files" else f"address_space_mib={vms_mib + 300}"
    assert f"child_limits.{key}" in info.value.error_message
    assert info.value.error_type == ("OSError" if what == "files" else "MemoryError")


# -- logs ------------------------------------------------------------------------------


def test_log_lines_and_prints_reach_redis_in_order(redis_url: str, redis_client) -> None:
    with running_supervisor(redis_url, **PROC), client_for(redis_url) as client:
        handle = client.enqueue("proc_logs")
        assert handle.result(wait_timeout=5000) == "logged"

        def lines() -> list[dict[str, Any]]:
            got = [line for _, line in read_job_log(client.store, handle.id)]
            return got if len(got) >= 9 else []

        got = wait_for(lines, what="the job's log lines")
    # ctx.log and print share the message pipe: exactly in order. What fd 1/2 carry
    # (C code, subprocesses) comes through its own pipe and is only ordered within it.
    python_level = [x for x in got if x.get("source") != "output"]
    assert [(x["msg"], x["level"], x.get("source", "log")) for x in python_level] == [
        ("one", "info", "log"), ("two", "info", "stdout"), ("three", "warn", "log"),
        ("four", "warn", "stderr"), ("five", "info", "stdout"), ("six", "error", "log"),
        ("no newline at the end", "info", "stdout")]
    assert python_level[0]["data"] == {"n": 1}
    error = python_level[5]["err"]
    assert error["type"] == "ValueError" and "proc_logs.py" in error["traceback"]
    assert [x["msg"] for x in got if x.get("source") == "output"] == [
        "from fd 1", "from sys.stdout.buffer"]


# -- jobs the child does not have by name ----------------------------------------------


def test_a_closure_registered_after_the_fork_travels_by_cloudpickle(redis_url: str) -> None:
    with running_supervisor(redis_url, **PROC) as sup:
        wait_for(lambda: pool_full(sup), what="a full pool")
        forked = {c["pid"] for c in live_children(sup)}
        factor = 7
        spec = registry.register_job("proc_late", lambda data: {"pid": os.getpid(),
                                                                "n": data * factor})
        sup.registry.jobs["proc_late"] = spec  # what a plugin loaded late would do
        try:
            with client_for(redis_url) as client:
                got = [client.run_job("proc_late", i) for i in range(4)]
        finally:
            registry._REGISTERED.pop("proc_late", None)
    assert [g["n"] for g in got] == [0, 7, 14, 21]
    assert {g["pid"] for g in got} <= forked  # the children forked before it existed


# -- around the pool -------------------------------------------------------------------


def test_a_sigkilled_supervisor_leaves_no_child_alive(redis_url: str, tmp_path: Path) -> None:
    proc = SupervisorProcess(redis_url, ["--separate-process", "--workers", "default"],
                             SANDBOXRUNNER_CONCURRENCY="2")
    try:
        proc.wait_ready()
        with client_for(redis_url) as client:
            client.enqueue("proc_hang", {"file": str(tmp_path / "pid"), "how": "sleep"},
                           timeout=60_000)
            busy = read_pids(tmp_path / "pid")[0]
        # its fork server, and the two children the fork server forked
        tree = wait_for(lambda: len(kids := [p.pid for p in psutil.Process(
            proc.proc.pid).children(recursive=True)]) >= 3 and kids,
            what="the fork server and two children")
        assert busy in tree
        proc.signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: all(is_gone(pid) for pid in tree), timeout_s=3,
                 what="the fork server and every child to die with their supervisor")
    finally:
        proc.stop()


class _NoSink:
    def emit(self, job_id: str, queue: str, line: dict[str, Any]) -> None:
        pass


def test_a_pool_closed_while_its_children_start_leaves_none_behind(redis_url: str) -> None:
    # closing at once (a stop right after a recycle does) may meet children just forked,
    # not yet in a process group of their own: the kill must reach them all the same
    config = make_config(redis_url, **{**PROC, "concurrency": 4})
    jobs = load_registry(config.jobs_dir)
    server = forkserver.ForkServer(config, jobs, None, ("default",))
    try:
        for attempt in range(20):
            executor = processes.ProcessExecutor("default", jobs, config, lambda _: None,
                                                 _NoSink(), fork_server=server)
            time.sleep(0.001 * (attempt % 5))
            started = time.monotonic()
            executor.shutdown(0)
            assert time.monotonic() - started < 5, "the pool hung reaping its children"
            left = psutil.Process(server.pid).children()
            assert all(is_gone(c.pid) for c in left), left
    finally:
        server.close()


def test_thread_and_process_supervisors_serve_one_queue_together(redis_url: str) -> None:
    with running_supervisor(redis_url, workers="default", concurrency=2), \
            running_supervisor(redis_url, **PROC) as sup, client_for(redis_url) as client:
        wait_for(lambda: pool_full(sup), what="a full pool")
        handles = [client.enqueue("proc_pid", {"seconds": 0.02}) for _ in range(40)]
        pids = {h.result(wait_timeout=10_000)["pid"] for h in handles}
    assert os.getpid() in pids  # the thread-mode supervisor runs jobs in this process
    assert len(pids - {os.getpid()}) >= 1  # and the children of the other took some


def test_a_nested_run_job_from_a_child_uses_the_childs_own_client(redis_url: str) -> None:
    with running_supervisor(redis_url, **PROC), client_for(redis_url) as client:
        inner = client.run_job("nested", {"inner": "proc_pid"})
        assert psutil.Process(inner["ppid"]).ppid() == os.getpid()  # a child of our pool's


def test_snapshot_and_running_show_each_child(redis_url: str, tmp_path: Path) -> None:
    with running_supervisor(redis_url, **PROC) as sup, client_for(redis_url) as client:
        wait_for(lambda: pool_full(sup), what="a full pool")
        handle = client.enqueue("proc_hang", {"file": str(tmp_path / "pid"), "how": "sleep"},
                                timeout=2000)
        pid = read_pids(tmp_path / "pid")[0]
        executor = sup.executors["default"]
        running = executor.running()
        snap = executor.snapshot()
        sup.stop(grace_ms=0)  # hands the job back instead of waiting for it
    assert [(r.id, r.worker) for r in running] == [(handle.id, str(pid))]
    rows = {c["pid"]: c for c in snap["children"]}
    assert rows[pid]["state"] == "busy" and rows[pid]["job_name"] == "proc_hang"
    assert rows[pid]["rss_bytes"] > 0 and set(rows[pid]) >= {"cpu_percent", "jobs_served"}
    assert snap["capacity"] == 2 and snap["running"] == 1


def test_nested_run_job_that_would_wait_for_its_own_pool_is_explained(redis_url: str) -> None:
    with running_supervisor(redis_url, use_separate_process=True, concurrency=1), \
            client_for(redis_url) as client:
        with pytest.raises(JobFailed) as info:
            client.run_job("nested", {"inner": "echo", "inner_data": 1}, wait_timeout=15_000)
        assert info.value.error_type == "DeadlockError"
        assert client.run_job("echo", 2)["echo"] == 2  # the pool's counters were released


def test_nested_run_job_with_a_free_child_works(redis_url: str) -> None:
    with running_supervisor(redis_url, use_separate_process=True, concurrency=2), \
            client_for(redis_url) as client:
        assert client.run_job("nested", {"inner": "echo", "inner_data": 1},
                              wait_timeout=15_000)["echo"] == 1


def test_the_backlog_of_claimed_jobs_is_deep_for_short_jobs_and_one_a_child_for_long_ones(
        redis_url: str, redis_client: Any) -> None:
    with running_supervisor(redis_url, **PROC) as sup, client_for(redis_url) as client:
        executor = sup.executors["default"]
        # nothing run yet: one waiting job per child (another supervisor may be idle)
        assert executor._backlog_limit() == 2
        for i in range(20):
            client.run_job("echo", i)
        # short jobs: more wait, so a claim or settlement serves several of them
        assert executor._backlog_limit() > 2
        with executor.pool.lock:
            assert executor._free() > 2
        client.run_job("slow", {"seconds": 0.3})
        assert executor._backlog_limit() == 2
        # long jobs: what the two busy children and a short backlog cannot take stays in
        # Redis for any supervisor
        handles = [client.enqueue("slow", {"seconds": 0.5}) for _ in range(6)]
        time.sleep(0.25)
        assert executor.snapshot()["backlog"] <= 2 and executor.jobs_in_hand() <= 4
        assert redis_client.llen(Keys("sr").wait("default")) >= 2
        assert [h.result(wait_timeout=10_000)["slept"] for h in handles] == [0.5] * 6
