"""Process mode's fork server: children are forked from a single-threaded process, never
from the threaded supervisor; it is replaced when it dies and dies with its supervisor.

The rest of process mode (deadlines, crashes, limits, logs) is in tests/test_processes.py.
"""

from __future__ import annotations

import builtins
import importlib.util
import os
import signal
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sandboxrunner import JobFailed, registry
from sandboxrunner.errors import JobLoadError
from sandboxrunner.executors import forkserver
from tests.supervisors import SupervisorProcess, client_for, running_supervisor, wait_for
from tests.test_processes import PROC, is_gone, live_children, pool_full, read_pids


def fork_server_of(supervisor: Any) -> psutil.Process:
    """The process the supervisor's children were forked from (one for all of them)."""
    size = supervisor.executors["default"].size
    pids = wait_for(lambda: pool_full(supervisor, size) and live_children(supervisor),
                    what="a full pool")
    parents = {psutil.Process(c["pid"]).ppid() for c in pids}
    assert len(parents) == 1, parents
    return psutil.Process(parents.pop())


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fork server is started as a fresh interpreter, as from a threaded app, even
    where this process has one thread and would fork it."""
    monkeypatch.setattr(forkserver, "may_fork_here", lambda: False)
    yield


# -- where children come from ----------------------------------------------------------


# "auto": forked when this process runs one thread (as under `sandboxrunner start`, which
# the command-line tests below check), spawned otherwise
@pytest.mark.parametrize("how", ["auto", "spawned"])
def test_children_come_from_a_single_threaded_fork_server_not_the_supervisor(
        redis_url: str, how: str, request: pytest.FixtureRequest) -> None:
    if how == "spawned":
        request.getfixturevalue("spawned")
    with running_supervisor(redis_url, **PROC) as sup, client_for(redis_url) as client:
        server = fork_server_of(sup)
        assert server.pid != os.getpid() and server.ppid() == os.getpid()
        assert server.num_threads() == 1
        ran = client.run_job("proc_pid")
        assert ran["ppid"] == server.pid and ran["pgid"] == ran["pid"]
    assert not psutil.pid_exists(server.pid)  # stopped with the supervisor, and reaped


def test_a_lock_held_in_a_supervisor_thread_while_children_respawn_never_reaches_them(
        redis_url: str) -> None:
    # the failure mode CPython 3.12+ warns about: a child forked from a threaded process
    # inherits every lock another thread held at that moment, held for ever
    release = threading.Event()
    with running_supervisor(redis_url, **{**PROC, "concurrency": 1},
                            max_jobs_per_child=1) as sup, client_for(redis_url) as client:
        lock = sys.modules[sup.registry.get("proc_lock").handler.__module__].LOCK
        holder = threading.Thread(target=lambda: lock.acquire() and release.wait(30))
        holder.start()
        try:
            wait_for(lock.locked, what="the lock held by another thread")
            # a new child per job: each is forked while the lock is held here
            ran = [client.run_job("proc_lock", {"wait": 1.0}) for _ in range(3)]
        finally:
            release.set()
            holder.join()
            lock.release()
    assert [r["acquired"] for r in ran] == [True, True, True]
    assert len({r["pid"] for r in ran}) == 3


@pytest.mark.skipif(sys.version_info < (3, 12), reason="the warning came with 3.12")
def test_no_child_is_forked_from_a_threaded_process(redis_url: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)  # as `-W always` would show
        with running_supervisor(redis_url, **PROC, max_jobs_per_child=1), \
                client_for(redis_url) as client:
            pids = {client.run_job("proc_pid")["pid"] for _ in range(4)}
    assert len(pids) == 4  # four children forked while this process runs threads
    assert [str(w.message) for w in caught if "fork()" in str(w.message)] == []


def _parent_pid(process: psutil.Process) -> int | None:
    """PROCESS's parent pid; None once it exited (a child that served its one job)."""
    try:
        return process.ppid()
    except psutil.NoSuchProcess:
        return None


def test_a_supervisor_started_by_the_command_forks_no_child_from_its_threads(
        redis_url: str) -> None:
    proc = SupervisorProcess(redis_url, ["--separate-process", "--workers", "default", "-v"],
                             SANDBOXRUNNER_CONCURRENCY="1", SANDBOXRUNNER_MAX_JOBS_PER_CHILD="1",
                             PYTHONWARNINGS="always::DeprecationWarning")
    try:
        proc.wait_ready()
        with client_for(redis_url) as client:
            pids = {client.run_job("proc_pid")["pid"] for _ in range(3)}
        tree = psutil.Process(proc.proc.pid).children(recursive=True)
        servers = [p for p in tree if _parent_pid(p) == proc.proc.pid]
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        output = proc.output()
    finally:
        proc.stop()
    assert len(pids) == 3 and len(servers) == 1
    assert f"fork server (pid {servers[0].pid}) forked from this process" in output
    assert "multi-threaded" not in output, output


# -- jobs the fork server did not import -----------------------------------------------


@pytest.mark.parametrize("how", ["auto", "spawned"])
def test_a_closure_registered_before_start_reaches_the_fork_servers_children(
        redis_url: str, how: str, request: pytest.FixtureRequest) -> None:
    if how == "spawned":
        request.getfixturevalue("spawned")
    secret = {"word": "captured"}
    registry.register_job("proc_closure", lambda data: {"pid": os.getpid(), **secret})
    try:
        with running_supervisor(redis_url, **PROC), client_for(redis_url) as client:
            got = client.run_job("proc_closure", 1)
    finally:
        registry._REGISTERED.pop("proc_closure", None)
    assert got["word"] == "captured" and got["pid"] != os.getpid()


def test_a_nested_run_job_in_a_spawned_fork_servers_child_sees_its_pool(
        redis_url: str, spawned: None) -> None:
    with running_supervisor(redis_url, use_separate_process=True, concurrency=1), \
            client_for(redis_url) as client:
        with pytest.raises(JobFailed) as info:
            client.run_job("nested", {"inner": "echo", "inner_data": 1}, wait_timeout=15_000)
        assert client.run_job("echo", 2)["echo"] == 2
    assert info.value.error_type == "DeadlockError"


# -- the fork server's own death -------------------------------------------------------


@pytest.mark.parametrize("how", ["auto", "spawned"])
def test_a_killed_fork_server_takes_its_children_and_is_replaced(
        redis_url: str, tmp_path: Path, how: str, request: pytest.FixtureRequest,
        caplog: pytest.LogCaptureFixture) -> None:
    if how == "spawned":
        request.getfixturevalue("spawned")
    with running_supervisor(redis_url, **PROC) as sup, client_for(redis_url) as client:
        server = fork_server_of(sup)
        handle = client.enqueue("proc_hang", {"file": str(tmp_path / "pid"), "how": "sleep"},
                                timeout=30_000)
        busy = read_pids(tmp_path / "pid")[0]
        server.send_signal(signal.SIGKILL)
        with pytest.raises(JobFailed) as info:
            handle.result(wait_timeout=5000)
        wait_for(lambda: is_gone(busy) and not psutil.pid_exists(server.pid), timeout_s=3,
                 what="the fork server and its busy child to be gone")
        new_server = wait_for(lambda: (s := fork_server_of(sup)).pid != server.pid and s,
                              what="a new fork server")
        assert client.run_job("proc_pid")["ppid"] == new_server.pid
    assert info.value.error_type == "ChildCrashed"
    assert f"its fork server (pid {server.pid}) died" in info.value.error_message
    assert f"fork server (pid {server.pid}) of this supervisor died" in caplog.text


def test_a_fork_server_that_stops_answering_is_killed_and_replaced(
        redis_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(forkserver, "REQUEST_TIMEOUT_S", 0.3)
    with running_supervisor(redis_url, **{**PROC, "concurrency": 1},
                            max_jobs_per_child=1) as sup, client_for(redis_url) as client:
        server = fork_server_of(sup)
        server.suspend()  # SIGSTOP: alive, but it answers nothing
        try:
            # the idle child runs it; its replacement is asked of the stopped server
            assert client.run_job("echo", 1)["echo"] == 1
            assert client.run_job("echo", 2, wait_timeout=10_000)["echo"] == 2
        finally:
            if psutil.pid_exists(server.pid):
                server.resume()
        assert fork_server_of(sup).pid != server.pid
    assert f"the fork server (pid {server.pid}) did not answer properly" in caplog.text


def test_a_spawned_fork_server_that_cannot_import_a_job_file_fails_the_start(
        redis_url: str, tmp_path: Path, spawned: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a job file that imports only in the app that set things up first, as a web
    # framework's models do: a fresh interpreter (the spawned fork server) cannot
    (tmp_path / "needs_app.py").write_text(textwrap.dedent("""
        import builtins
        if not getattr(builtins, "sr_test_app_ready", False):
            raise RuntimeError("call setup() first")
        def run(data):
            return data
    """))
    monkeypatch.setattr(builtins, "sr_test_app_ready", True, raising=False)
    with pytest.raises(JobLoadError) as info:
        with running_supervisor(redis_url, **PROC, jobs_dir=str(tmp_path)):
            pass
    message = str(info.value)
    assert message.startswith("the fork server of the process pool (a fresh interpreter, as "
                              "this process runs threads: each job file must import on its "
                              "own, as under `sandboxrunner start`) did not start: job file ")
    assert "needs_app.py" in message and "call setup() first" in message


def test_a_job_a_spawned_fork_server_cannot_import_fails_clearly_in_its_child(
        redis_url: str, tmp_path: Path, spawned: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # a handler from a module the app loaded by its path: pickled by reference, it cannot
    # be imported by name in a fresh interpreter
    (tmp_path / "by_path.py").write_text("def handler(data):\n    return data\n")
    spec = importlib.util.spec_from_file_location("sr_test_by_path", tmp_path / "by_path.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "sr_test_by_path", module)
    spec.loader.exec_module(module)
    registry.register_job("by_path", module.handler)
    try:
        with running_supervisor(redis_url, **PROC), client_for(redis_url) as client:
            with pytest.raises(JobFailed) as info:
                client.run_job("by_path", 1)
            assert client.run_job("echo", 2)["echo"] == 2
    finally:
        registry._REGISTERED.pop("by_path", None)
    assert "the fork server could not load job by_path (ModuleNotFoundError" in caplog.text
    assert info.value.error_type == "ModuleNotFoundError"
    assert "the child could not start job 'by_path'" in info.value.error_message


def test_a_supervisor_whose_job_files_start_threads_spawns_its_fork_server_which_dies_with_it(
        redis_url: str, tmp_path: Path) -> None:
    # the process runs a thread before the supervisor is built: forking it is what the
    # fork server avoids, so it is spawned; it still dies with a SIGKILLed supervisor
    (tmp_path / "with_thread.py").write_text(textwrap.dedent("""
        import os
        import threading
        import time

        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()

        def run(data):
            return {"pid": os.getpid(), "ppid": os.getppid()}
    """))
    proc = SupervisorProcess(redis_url, ["--separate-process", "--workers", "default", "-v"],
                             SANDBOXRUNNER_CONCURRENCY="1", SANDBOXRUNNER_JOBS_DIR=str(tmp_path))
    try:
        proc.wait_ready()
        with client_for(redis_url, jobs_dir=str(tmp_path)) as client:
            ran = client.run_job("with_thread")
        tree = [p.pid for p in psutil.Process(proc.proc.pid).children(recursive=True)]
        assert psutil.Process(ran["ppid"]).ppid() == proc.proc.pid
        proc.signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: all(is_gone(pid) for pid in tree), timeout_s=3,
                 what="the spawned fork server and its child to die with their supervisor")
        output = proc.output()
    finally:
        proc.stop()
    assert f"fork server (pid {ran['ppid']}) spawned: this process runs threads" in output
