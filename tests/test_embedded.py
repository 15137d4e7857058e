"""Tests of the embedded server (start, reuse, share, persist, replace, stop) and TestServer."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from sandboxrunner import embedded
from sandboxrunner.embedded import (
    embedded_status,
    ensure_embedded,
    server_binary,
    stop_embedded,
)
from sandboxrunner.errors import EXIT_IN_USE, ConfigError, RedisUnavailable
from sandboxrunner.testserver import TestServer

REPO_ROOT = Path(__file__).resolve().parent.parent


def servers_in(state_dir: Path) -> list[psutil.Process]:
    """Live processes working in state_dir: every server started for that project."""
    target = str(state_dir.resolve())
    found = []
    for proc in psutil.process_iter(["cwd", "status"]):
        if proc.info["cwd"] == target and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def ping(url: str) -> bool:
    with redis.Redis.from_url(url, socket_timeout=2) as client:
        return bool(client.ping())


def running_pid(project: Path) -> int:
    status = embedded_status(project)
    assert status is not None, "the project's embedded server is not running"
    return int(status["pid"])


def dead_pid() -> int:
    """A pid that certainly belonged to a process which has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """An empty project folder; every server started in it is stopped afterwards."""
    project_dir = tmp_path / "project"
    project_dir.mkdir()
    yield project_dir
    stop_embedded(project_dir)
    for proc in servers_in(project_dir / ".sandboxrunner"):  # leftovers of a failing test
        proc.kill()
        proc.wait(5)


def test_server_binary_is_an_executable_file() -> None:
    path = server_binary()
    assert path.is_file() and os.access(path, os.X_OK)


def test_ensure_embedded_starts_a_server_that_answers_ping(project: Path) -> None:
    url = ensure_embedded(project)

    assert url.startswith("redis://127.0.0.1:")
    assert ping(url)
    state_dir = project / ".sandboxrunner"
    assert (state_dir / ".gitignore").read_text().strip() == "*"
    state = json.loads((state_dir / "redis.json").read_text())
    assert set(state) == {"url", "pid", "port", "started_at"}
    assert state["url"] == url and url.endswith(f":{state['port']}")
    assert [p.pid for p in servers_in(state_dir)] == [state["pid"]]
    assert os.getsid(state["pid"]) != os.getsid(0)  # detached from our terminal session
    with redis.Redis.from_url(url) as client:
        info = client.info("server")
        config = client.config_get("*")
    assert info["process_id"] == state["pid"]
    assert config["appendonly"] == "yes" and config["save"] == ""
    assert config["bind"] == "127.0.0.1" and config["protected-mode"] == "yes"
    assert Path(config["logfile"]) == state_dir / "redis.log"


def test_server_outlives_the_process_that_started_it(project: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from sandboxrunner.embedded import "
        "ensure_embedded; print(ensure_embedded(Path(sys.argv[1])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(project)],
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    url = done.stdout.strip()
    assert ping(url)
    assert ensure_embedded(project) == url


def test_second_call_reuses_the_running_server(project: Path) -> None:
    url = ensure_embedded(project)
    first = embedded_status(project)

    assert ensure_embedded(project) == url
    assert embedded_status(project) == first
    assert first is not None and first["url"] == url
    assert first["dir"] == str(project / ".sandboxrunner")
    assert len(servers_in(project / ".sandboxrunner")) == 1


def test_processes_starting_at_once_share_one_server(project: Path) -> None:
    # Each child sleeps until the same instant, so all of them race for the start.
    go_at = time.time() + 1.5
    code = (
        "import sys, time; from pathlib import Path\n"
        "from sandboxrunner.embedded import ensure_embedded\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "print(ensure_embedded(Path(sys.argv[1])))\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(project), str(go_at)],
            env=_child_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    urls = {child.communicate(timeout=60)[0].strip() for child in children}

    assert all(child.returncode == 0 for child in children)
    assert len(urls) == 1 and ping(urls.pop())
    assert len(servers_in(project / ".sandboxrunner")) == 1


def test_data_survives_stop_and_start(project: Path) -> None:
    url = ensure_embedded(project)
    with redis.Redis.from_url(url) as client:
        client.rpush("jobs", "a", "b")
    old_pid = running_pid(project)

    assert stop_embedded(project) is True
    new_url = ensure_embedded(project)

    assert running_pid(project) != old_pid
    with redis.Redis.from_url(new_url) as client:
        assert client.lrange("jobs", 0, -1) == [b"a", b"b"]


def test_stale_state_with_a_dead_pid_is_replaced(project: Path) -> None:
    state_dir = project / ".sandboxrunner"
    state_dir.mkdir()
    stale = {"url": "redis://127.0.0.1:1", "pid": dead_pid(), "port": 1, "started_at": 0}
    (state_dir / "redis.json").write_text(json.dumps(stale))

    url = ensure_embedded(project)

    assert ping(url)
    state = json.loads((state_dir / "redis.json").read_text())
    assert state["pid"] != stale["pid"] and state["url"] == url
    assert not list(state_dir.glob("*.tmp"))


def test_state_naming_a_live_foreign_server_is_neither_reused_nor_killed(
    project: Path, redis_server: TestServer
) -> None:
    # The pid is alive (this test process) and the port answers PING (the session
    # server), but neither is the project's server.
    state_dir = project / ".sandboxrunner"
    state_dir.mkdir()
    stale = {
        "url": redis_server.url,
        "pid": os.getpid(),
        "port": redis_server.port,
        "started_at": 0,
    }
    (state_dir / "redis.json").write_text(json.dumps(stale))

    assert embedded_status(project) is None
    url = ensure_embedded(project)

    assert url != redis_server.url and ping(url)
    assert ping(redis_server.url)


def test_unreadable_state_file_is_treated_as_stale(project: Path) -> None:
    state_dir = project / ".sandboxrunner"
    state_dir.mkdir()
    (state_dir / "redis.json").write_text("{not json")

    assert ping(ensure_embedded(project))


def test_a_hung_server_is_killed_and_replaced(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_embedded(project)
    hung_pid = running_pid(project)
    os.kill(hung_pid, signal.SIGSTOP)
    # only the stopped one must be given up on quickly: its replacement may take its time
    # loading the data the stopped one wrote
    monkeypatch.setattr(embedded, "ANSWER_TIMEOUT_S", 0.3)

    url = ensure_embedded(project)

    assert ping(url)
    assert running_pid(project) != hung_pid
    assert gone(hung_pid)


def append_to_aof(state_dir: Path, commands: int) -> None:
    """Append COMMANDS SETs to the stopped server's AOF: a restart has them to load
    (the server answers INFO every 1024 commands while it loads, so loading is seen)."""
    manifest = (state_dir / "appendonlydir" / "appendonly.aof.manifest").read_text()
    incr = next(line.split()[1] for line in manifest.splitlines() if line.endswith("type i"))
    chunk = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n" % (len(k), k)
                     for k in (b"k%d" % i for i in range(commands)))
    with open(state_dir / "appendonlydir" / incr, "ab") as aof:
        aof.write(chunk)


def test_a_restarted_server_is_handed_out_only_once_its_data_is_loaded(project: Path) -> None:
    ensure_embedded(project)
    assert stop_embedded(project) is True
    append_to_aof(project / ".sandboxrunner", 200_000)

    url = ensure_embedded(project)

    with redis.Redis.from_url(url, retry=None) as client:  # one try: LOADING would raise
        assert client.ping()
        assert client.info("persistence")["loading"] == 0
        assert client.dbsize() == 200_000


def test_the_first_command_after_a_restart_waits_for_the_data_to_load(project: Path) -> None:
    (project / "worker_jobs").mkdir()
    (project / "worker_jobs" / "hello.py").write_text(HELLO)
    ensure_embedded(project)
    assert stop_embedded(project) is True
    append_to_aof(project / ".sandboxrunner", 200_000)

    # `start` is the first command after a reboot; it prints its banner once Redis answered
    supervisor = subprocess.Popen(CLI + ["start"], cwd=project, env=_child_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert supervisor.stdout is not None
        banner = supervisor.stdout.readline()
        assert banner.startswith("sandboxrunner supervisor"), supervisor.stderr.read()
        supervisor.send_signal(signal.SIGTERM)  # may come before its handler: not asserted
        supervisor.wait(timeout=30)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        supervisor.stdout.close()
        supervisor.stderr.close()


def test_stop_embedded_stops_the_server(project: Path) -> None:
    ensure_embedded(project)
    pid = running_pid(project)

    assert stop_embedded(project) is True

    assert gone(pid)
    assert embedded_status(project) is None
    assert stop_embedded(project) is False


def test_a_restarted_server_keeps_its_port(project: Path) -> None:
    url = ensure_embedded(project)
    assert stop_embedded(project) is True
    assert ensure_embedded(project) == url  # after a stop

    os.kill(running_pid(project), signal.SIGKILL)  # after a crash
    wait_for_gone = time.monotonic() + 10
    while embedded_status(project) is not None and time.monotonic() < wait_for_gone:
        time.sleep(0.02)
    assert ensure_embedded(project) == url


def test_a_restart_whose_port_was_taken_picks_another_and_says_so(
        project: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = ensure_embedded(project)
    port = int(url.rsplit(":", 1)[1])
    assert stop_embedded(project) is True
    with socket.create_server((embedded.HOST, port)):  # another program took it
        with caplog.at_level(logging.WARNING, logger="sandboxrunner.embedded"):
            new_url = ensure_embedded(project)
    assert new_url != url and ping(new_url)
    assert f"port {port}" in caplog.text and "taken" in caplog.text
    assert stop_embedded(project) is True
    assert ensure_embedded(project) == new_url  # the new port is the one remembered now


def test_status_and_stop_without_a_server(project: Path) -> None:
    assert embedded_status(project) is None
    assert stop_embedded(project) is False


def test_stop_leaves_a_reused_pid_alone(project: Path) -> None:
    state_dir = project / ".sandboxrunner"
    state_dir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = {"url": "redis://127.0.0.1:1", "pid": sleeper.pid, "port": 1, "started_at": 0}
        (state_dir / "redis.json").write_text(json.dumps(state))

        assert stop_embedded(project) is False
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_missing_project_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does-not-exist"):
        ensure_embedded(tmp_path / "does-not-exist")


def test_failed_start_quotes_the_server_log(project: Path) -> None:
    state_dir = project / ".sandboxrunner"
    state_dir.mkdir()
    (state_dir / "appendonlydir").write_text("a file where the AOF folder should be")

    with pytest.raises(RedisUnavailable, match="append-only dir"):
        ensure_embedded(project)
    assert servers_in(state_dir) == []


def test_test_server_restart_keeps_port_and_persisted_data(fresh_server: TestServer) -> None:
    port = fresh_server.port
    with redis.Redis.from_url(fresh_server.url) as client:
        client.set("kept", "1")
    old_pid = fresh_server.pid

    fresh_server.restart(down_s=0.05)

    assert fresh_server.port == port and fresh_server.pid != old_pid
    with redis.Redis.from_url(fresh_server.url) as client:
        assert client.get("kept") == b"1"


def test_test_server_kill_then_start(fresh_server: TestServer) -> None:
    pid = fresh_server.pid
    assert pid is not None

    fresh_server.kill()

    assert gone(pid) and fresh_server.pid is None
    fresh_server.start()
    assert ping(fresh_server.url)


def test_test_server_without_persist_starts_empty_after_restart(tmp_path: Path) -> None:
    with TestServer(tmp_path / "volatile") as server:
        with redis.Redis.from_url(server.url) as client:
            client.set("lost", "1")
        server.restart()
        with redis.Redis.from_url(server.url) as client:
            assert client.get("lost") is None
            assert client.config_get("appendonly")["appendonly"] == "no"
    assert server.pid is None


def test_test_server_on_a_taken_port_fails_with_the_log(
    tmp_path: Path, redis_server: TestServer
) -> None:
    # The port answers PING, but from another server: start must not mistake it for ours.
    server = TestServer(tmp_path / "clash", port=redis_server.port)

    with pytest.raises(RedisUnavailable, match="(?i)address already in use"):
        server.start()
    assert server.pid is None


def test_redis_url_fixture_starts_each_test_empty(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0
    redis_client.set("leftover", "1")  # the next test using the fixture must not see it


def test_redis_url_fixture_flushes_leftovers(redis_client: redis.Redis) -> None:
    assert redis_client.get("leftover") is None


def _child_env() -> dict[str, str]:
    """This environment, with the repo importable even when the package is not installed."""
    paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


HELLO = "def run(data, ctx):\n    return {'hello': data}\n"
CLI = [sys.executable, "-m", "sandboxrunner"]


def _cli_env() -> dict[str, str]:
    """_child_env without REDIS_URL or SANDBOXRUNNER_* settings: the embedded server."""
    return {k: v for k, v in _child_env().items()
            if k != "REDIS_URL" and not k.startswith("SANDBOXRUNNER_")}


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=project, env=_cli_env(), capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def supervised(project: Path) -> Iterator[subprocess.Popen[str]]:
    """`sandboxrunner start` in the project (which starts its embedded server), serving a
    job `hello` once a first `run` has gone through; SIGTERMed afterwards."""
    (project / "worker_jobs").mkdir()
    (project / "worker_jobs" / "hello.py").write_text(HELLO)
    supervisor = subprocess.Popen([*CLI, "start"], cwd=project, env=_cli_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  text=True)
    try:
        done = _cli(project, "run", "hello", '"first"')
        assert done.returncode == 0, done.stderr
        yield supervisor
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(timeout=30)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait()


def test_redis_stop_refuses_while_a_supervisor_uses_the_server_naming_it(
        project: Path, supervised: subprocess.Popen[str]) -> None:
    url = ensure_embedded(project)
    with redis.Redis.from_url(url) as client:
        (sid,) = [s.decode() for s in client.zrange("sr:{sr:default}:sups", 0, -1)]

    refused = _cli(project, "redis", "stop")

    assert refused.returncode == EXIT_IN_USE, refused.stderr
    assert refused.stdout == "" and len(refused.stderr.strip().splitlines()) == 1
    assert sid in refused.stderr and f"pid {supervised.pid}" in refused.stderr
    assert socket.gethostname() in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert embedded_status(project) is not None and ping(url)


def test_redis_stop_force_stops_and_the_next_command_restarts_it_for_the_supervisor(
        project: Path, supervised: subprocess.Popen[str]) -> None:
    url = ensure_embedded(project)

    forced = _cli(project, "redis", "stop", "--force")

    assert forced.returncode == 0, forced.stderr
    assert "stopped" in forced.stdout
    assert embedded_status(project) is None
    again = _cli(project, "run", "hello", '"again"')  # restarts the server on its port
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"hello": "again"}
    assert ensure_embedded(project) == url
    assert supervised.poll() is None  # the same supervisor served it, reconnected
