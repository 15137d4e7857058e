"""The `sandboxrunner` command as a user runs it, in fresh project folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from sandboxrunner.embedded import stop_embedded
from sandboxrunner.keys import Keys, queue_of_job
from sandboxrunner.store import Store
from tests.supervisors import (
    ROOT,
    TEST_JOBS,
    client_for,
    make_config,
    running_supervisor,
    wait_for,
)

CLI = [sys.executable, "-m", "sandboxrunner"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "REDIS_URL" and not k.startswith("SANDBOXRUNNER_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _cli(args: list[str], cwd: Path, timeout: float = 60,
         **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def _project(tmp_path: Path, jobs: dict[str, str]) -> Path:
    folder = tmp_path / "worker_jobs"
    folder.mkdir(parents=True)
    for name, body in jobs.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return tmp_path


HELLO = """
    def run(data, ctx):
        ctx.log("hello", data=data)
        return {"hello": data["name"]}
"""


def test_embedded_server_runs_a_job_end_to_end_in_a_fresh_folder(tmp_path: Path) -> None:
    project = _project(tmp_path, {"hello": HELLO})
    supervisor = subprocess.Popen(CLI + ["start"], cwd=project, env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        done = _cli(["run", "hello", '{"name": "ada"}'], project)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"hello": "ada"}
        state = json.loads((project / ".sandboxrunner" / "redis.json").read_text())
        assert state["url"].startswith("redis://127.0.0.1:")
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        if supervisor.stdout:
            supervisor.stdout.close()
        assert _cli(["redis", "stop"], project).returncode == 0


def test_jobs_lists_the_discovered_jobs(tmp_path: Path) -> None:
    project = _project(tmp_path, {"hello": HELLO, "urgent": "worker = 'priority'\n"
                                  "timeout = 500\ndef run():\n    return 1\n"})
    done = _cli(["jobs"], project)
    assert done.returncode == 0, done.stderr
    assert "hello" in done.stdout and "urgent" in done.stdout and "priority" in done.stdout


@pytest.mark.parametrize("body, problem", [
    ("import no_such_module\ndef run(): pass\n", "No module named 'no_such_module'"),
    ("def handler(): pass\n", "run"),
    ("worker = 'urgent'\ndef run(): pass\n", "priority"),
    ("cron = '61 * * * *'\ndef run(): pass\n", "61 * * * *"),
    ("singleton = 'yes'\ndef run(): pass\n", "singleton"),
])
def test_start_and_jobs_refuse_a_broken_job_file_naming_it(tmp_path: Path, body: str,
                                                            problem: str) -> None:
    project = _project(tmp_path, {"broken": body})
    for command in (["jobs"], ["start"]):
        done = _cli(command, project, timeout=30)
        assert done.returncode != 0
        assert "broken.py" in done.stderr
        assert problem in done.stderr


def test_unknown_worker_name_is_refused_with_the_supported_ones(tmp_path: Path) -> None:
    done = _cli(["start", "--workers", "urgent"], _project(tmp_path, {"hello": HELLO}))
    assert done.returncode != 0
    assert "default" in done.stderr and "priority" in done.stderr


def test_run_reports_bad_input_and_failures_with_exit_codes(redis_url: str,
                                                            tmp_path: Path) -> None:
    env = {"REDIS_URL": redis_url, "SANDBOXRUNNER_JOBS_DIR": str(TEST_JOBS)}
    bad_json = _cli(["run", "echo", "{not json"], tmp_path, **env)
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    unknown = _cli(["run", "nope", "1"], tmp_path, **env)
    assert unknown.returncode == 2 and "available jobs" in unknown.stderr
    supervisor = subprocess.Popen(CLI + ["start"], cwd=tmp_path, env=_env(**env),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        failed = _cli(["run", "fail", '{"card": "1"}'], tmp_path, **env)
        assert failed.returncode == 1
        assert "PaymentDeclined" in failed.stderr and "card 1 declined" in failed.stderr
        timed = _cli(["run", "slow", '{"seconds": 2}', "--timeout", "200"], tmp_path, **env)
        assert timed.returncode == 1 and "timed out" in timed.stderr
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=20)


def test_missing_redis_is_a_clear_error_without_password(tmp_path: Path) -> None:
    started = time.monotonic()
    done = _cli(["run", "hello", "1"], _project(tmp_path, {"hello": HELLO}),
                REDIS_URL="redis://:hunter2@127.0.0.1:1/0")
    assert done.returncode == 4
    assert "127.0.0.1:1" in done.stderr and "hunter2" not in done.stderr
    assert time.monotonic() - started < 20


def test_config_comes_from_pyproject(tmp_path: Path) -> None:
    project = _project(tmp_path, {"hello": HELLO})
    (project / "pyproject.toml").write_text("[tool.sandboxrunner]\njobs_dir = 'jobs_here'\n")
    (project / "worker_jobs").rename(project / "jobs_here")
    done = _cli(["jobs"], project)
    assert done.returncode == 0 and "hello" in done.stdout
    (project / "pyproject.toml").write_text("[tool.sandboxrunner]\nno_such_key = 1\n")
    done = _cli(["jobs"], project)
    assert done.returncode != 0 and "no_such_key" in done.stderr


# --------------------------------------------------------------------------- the project


@contextmanager
def _no_server_left_in(folder: Path) -> Iterator[None]:
    """Stops an embedded server the code under test should not have started in FOLDER."""
    try:
        yield
    finally:
        stop_embedded(folder)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    """The command's stderr, checked to be one `error:` line and no traceback."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_run_job_outside_any_project_names_the_folder_and_starts_no_server(
        tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = "from sandboxrunner import run_job; run_job('hello', {'name': 'ada'})"
    with _no_server_left_in(elsewhere):
        done = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=_env(),
                              capture_output=True, text=True, timeout=60)
        cli = _cli(["run", "hello", '{"name": "ada"}'], elsewhere)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sandboxrunner.errors.ConfigError: ")
    assert f"no sandboxrunner project found in {elsewhere}" in last and "REDIS_URL" in last
    assert cli.returncode == 3
    assert f"no sandboxrunner project found in {elsewhere}" in _one_error_line(cli)
    assert not (elsewhere / ".sandboxrunner").exists()


def test_an_unknown_job_outside_any_project_says_where_it_looked(redis_url: str,
                                                                 tmp_path: Path) -> None:
    done = _cli(["run", "hello", "{}"], tmp_path, REDIS_URL=redis_url)
    assert done.returncode == 2
    line = _one_error_line(done)
    assert "unknown job 'hello'" in line and str(tmp_path / "worker_jobs") in line
    assert "--project" in line and "SANDBOXRUNNER_PROJECT" in line


def test_the_project_is_found_from_a_subfolder_or_named_from_anywhere(tmp_path: Path) -> None:
    project = _project(tmp_path / "app", {"hello": HELLO})
    (project / "src" / "web").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, args, env in [(project / "src" / "web", [], {}),
                           (elsewhere, ["--project", str(project)], {}),
                           (elsewhere, [], {"SANDBOXRUNNER_PROJECT": str(project)})]:
        done = _cli(["jobs", *args], cwd, **env)
        assert done.returncode == 0, done.stderr
        assert "hello" in done.stdout
    missing = _cli(["jobs", "--project", str(tmp_path / "nope")], elsewhere)
    assert missing.returncode == 3
    assert _one_error_line(missing) == f"error: --project: {tmp_path / 'nope'} is not a folder"


def test_read_only_commands_never_start_the_embedded_server(tmp_path: Path) -> None:
    project = _project(tmp_path, {"hello": HELLO})
    job_id = "default-" + "0" * 32
    with _no_server_left_in(project):
        for command in (["logs", job_id], ["logs", "-f", job_id], ["result", job_id],
                        ["cron"]):
            done = _cli(command, project, timeout=20)
            assert done.returncode == 4, (command, done.stderr)
            line = _one_error_line(done)
            assert f"no embedded server runs for {project}" in line
            assert "sandboxrunner start" in line
        assert _cli(["jobs"], project).returncode == 0
    assert not (project / ".sandboxrunner").exists()


def test_a_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    project = _project(tmp_path, {"hello": HELLO})
    done = _cli(["start", "--workers", "urgent"], project)
    assert done.returncode == 3
    assert _one_error_line(done) == ("error: --workers: unknown worker 'urgent'; "
                                     "expected some of: default, priority")
    done = _cli(["start", "--concurrency", "0"], project)
    assert done.returncode == 3
    assert _one_error_line(done).startswith("error: --concurrency: expected a positive integer")


# --------------------------------------------------------------------------- run and result


@contextmanager
def _supervisor(cwd: Path, *args: str, **env: str) -> Iterator[subprocess.Popen]:
    """`sandboxrunner start` at env["REDIS_URL"], waited for until it serves `default`."""
    proc = subprocess.Popen(CLI + ["start", *args], cwd=cwd, env=_env(**env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with redis.Redis.from_url(env["REDIS_URL"]) as client:
            wait_for(lambda: proc.poll() is not None or client.zcard(Keys().sups("default")),
                     timeout_s=30, what="the supervisor to serve queue default")
        assert proc.poll() is None, "the supervisor exited"
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _test_jobs_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "SANDBOXRUNNER_JOBS_DIR": str(TEST_JOBS),
            "SANDBOXRUNNER_LEASE_MS": "400", "SANDBOXRUNNER_HEARTBEAT_MS": "100", **extra}


def test_a_wait_timeout_has_its_own_exit_code_and_result_fetches_the_job_later(
        redis_url: str, tmp_path: Path) -> None:
    env = _test_jobs_env(redis_url)
    with _supervisor(tmp_path, **env):
        waited = _cli(["run", "slow", '{"seconds": 1}', "--wait-timeout", "200"], tmp_path, **env)
        assert waited.returncode == 5, waited.stderr
        line = _one_error_line(waited)
        job_id = line.split("gave up waiting for job ")[1].split()[0]
        assert f"`sandboxrunner result {job_id}`" in line
        too_soon = _cli(["result", job_id, "--wait-timeout", "100"], tmp_path, **env)
        assert too_soon.returncode == 5 and job_id in _one_error_line(too_soon)
        fetched = _cli(["result", job_id], tmp_path, **env)
        assert fetched.returncode == 0, fetched.stderr
        assert json.loads(fetched.stdout) == {"slept": 1, "tag": None}
        failed = _cli(["run", "fail", '{"card": "7"}'], tmp_path, **env)
        assert failed.returncode == 1
    unknown = _cli(["result", "default-" + "0" * 32], tmp_path, **env)
    assert unknown.returncode == 2 and "default-" + "0" * 32 in _one_error_line(unknown)


def test_result_of_a_failed_job_exits_1_with_its_error(redis_url: str, tmp_path: Path) -> None:
    env = _test_jobs_env(redis_url)
    with _supervisor(tmp_path, **env):
        script = ("from sandboxrunner import enqueue; "
                  "print(enqueue('fail', {'card': '9'}).id)")
        job_id = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_env(**env),
                                capture_output=True, text=True, timeout=60,
                                check=True).stdout.strip()
        done = _cli(["result", job_id], tmp_path, **env)
    assert done.returncode == 1
    assert "PaymentDeclined" in done.stderr and "card 9 declined" in done.stderr
    assert "Traceback" in done.stderr  # the job's own, from its worker


def test_run_with_no_supervisor_exits_6_and_the_job_stays_queued(redis_url: str,
                                                                  tmp_path: Path) -> None:
    env = _test_jobs_env(redis_url)
    done = _cli(["run", "echo", '{"x": 1}'], tmp_path, **env)
    assert done.returncode == 6, done.stderr
    assert "no live supervisor serves queue 'default'" in done.stderr


# --------------------------------------------------------------------------- --help


def _commands() -> list[list[str]]:
    import typer.main

    from sandboxrunner.cli import app

    group: Any = typer.main.get_command(app)
    found = []
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None)
        found += [[name, sub] for sub in subcommands] if subcommands else [[name]]
    return found


def test_every_option_and_argument_has_help_text() -> None:
    import typer.main

    from sandboxrunner.cli import app

    group: Any = typer.main.get_command(app)
    for path in _commands():
        command = group
        for name in path:
            command = command.commands[name]
        for param in command.params:
            assert getattr(param, "help", None), f"{' '.join(path)} {param.name}: no help text"
        assert command.help, f"{' '.join(path)}: no help text"


def test_help_shows_no_bool_metavars_and_lists_the_exit_codes(tmp_path: Path) -> None:
    top_help = _cli(["--help"], tmp_path)
    assert top_help.returncode == 0
    for code, meaning in [(0, "done"), (1, "failed"), (2, "bad input"), (3, "configuration"),
                          (4, "Redis"), (5, "--wait-timeout"), (6, "no supervisor")]:
        assert any(line.strip().startswith(f"{code} ") and meaning in line
                   for line in top_help.stdout.splitlines()), (code, top_help.stdout)
    for path in _commands():
        done = _cli([*path, "--help"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert "<bool>" not in done.stdout, (path, done.stdout)
        assert "Exit codes:" in done.stdout or path[0] == "redis", (path, done.stdout)


@pytest.mark.parametrize("command", ["start", "run", "result", "logs", "cron", "top"])
def test_every_command_that_talks_to_redis_takes_redis_url(command: str,
                                                          tmp_path: Path) -> None:
    done = _cli([command, "--help"], tmp_path)
    assert done.returncode == 0 and "--redis-url URL" in done.stdout, done.stdout
    assert "--project DIR" in done.stdout


# --------------------------------------------------------------------------- logs


def _logs(job_id: str, cwd: Path, redis_url: str, *args: str) -> subprocess.CompletedProcess:
    return _cli(["logs", job_id, *args], cwd, timeout=30, **_test_jobs_env(redis_url))


def test_logs_of_an_unknown_id_is_an_error_with_or_without_follow(redis_url: str,
                                                                  tmp_path: Path) -> None:
    missing = "default-" + "0" * 32
    for args in ([], ["--follow"]):
        started = time.monotonic()
        done = _logs(missing, tmp_path, redis_url, *args)
        assert done.returncode == 2, done.stderr
        line = _one_error_line(done)
        assert f"no job {missing}" in line and "result_ttl" in line
        assert done.stdout == ""
        assert time.monotonic() - started < 10


def test_logs_labels_lines_as_top_does(redis_url: str, tmp_path: Path) -> None:
    with running_supervisor(redis_url, use_separate_process=True, concurrency=1), \
            client_for(redis_url) as client:
        handle = client.enqueue("proc_logs")
        assert handle.result(wait_timeout=10_000) == "logged"
    env = _test_jobs_env(redis_url)
    shown = wait_for(lambda: (lambda out: out if "from sys.stdout.buffer" in out else "")(
        _cli(["logs", handle.id], tmp_path, **env).stdout), what="every log line")
    tail = _cli(["top", "--once", "--width", "160"], tmp_path, **env).stdout
    top_labels = {parts[3]: parts[1] for parts in
                  (line.split(maxsplit=3) for line in tail.split("log tail")[1].splitlines())
                  if len(parts) == 4}
    ours = {parts[2]: parts[1] for parts in (line.split(maxsplit=2)
                                             for line in shown.splitlines())
            if len(parts) == 3 and parts[0].count(":") == 2}
    assert ours["two"] == "out" and ours["four"] == "err" and ours["from fd 1"] == "out"
    for msg in ("two", "four", "five", "from fd 1", "three"):
        assert ours[msg] == top_labels[msg], (msg, shown, tail)


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
                              env=_env(**_test_jobs_env(redis_url)),
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


# --------------------------------------------------------------------------- short ids


def _enqueued_with_id(redis_url: str, job_id: str, name: str = "echo") -> None:
    """A job enqueued under a chosen id, so that ids can share a prefix on purpose."""
    config = make_config(redis_url)
    store = Store(config, redis_url)
    try:
        store.enqueue(queue_of_job(job_id), job_id, name, '{"x": 1}', 1000)
    finally:
        store.close()


def test_the_short_id_top_shows_is_accepted_by_logs_and_result(redis_url: str,
                                                               tmp_path: Path) -> None:
    env = _test_jobs_env(redis_url)
    with running_supervisor(redis_url), client_for(redis_url) as client:
        done = client.enqueue("echo", {"n": 1})
        assert done.result(wait_timeout=5000)["echo"] == {"n": 1}
        failed = client.enqueue("fail", {"card": "5"})
        running = client.enqueue("slow", {"seconds": 1.5})
        wait_for(lambda: client.store.job_fields(running.id, "status")[0] == "active",
                 what="the slow job to start")
        tail = _cli(["top", "--once", "--width", "160"], tmp_path, **env).stdout
        for handle in (done, failed, running):
            short = handle.id.partition("-")[2][:8]
            assert short in tail
            full = _cli(["logs", handle.id], tmp_path, **env)
            by_short = _cli(["logs", short], tmp_path, **env)
            assert by_short.returncode == 0, by_short.stderr
            assert by_short.stdout.splitlines()[0] == full.stdout.splitlines()[0]
        result = _cli(["result", done.id.partition("-")[2][:8]], tmp_path, **env)
        assert result.returncode == 0 and json.loads(result.stdout)["echo"] == {"n": 1}
    queued = client_for(redis_url)
    with queued as client:
        waiting = client.enqueue("echo", {"n": 2})
    by_short = _cli(["logs", waiting.id.partition("-")[2][:8]], tmp_path, **env)
    assert by_short.returncode == 0 and "queued" in by_short.stdout


def test_an_ambiguous_short_id_lists_the_candidates(redis_url: str, tmp_path: Path) -> None:
    first, second = "default-abcd1234" + "0" * 24, "default-abcd1234" + "1" * 24
    other = "priority-abcd9999" + "2" * 24
    for job_id in (first, second, other):
        _enqueued_with_id(redis_url, job_id)
    env = _test_jobs_env(redis_url)
    ambiguous = _cli(["logs", "abcd1234"], tmp_path, **env)
    assert ambiguous.returncode == 2
    line = _one_error_line(ambiguous)
    assert "abcd1234" in line and first in line and second in line and other not in line
    for short, full in [("abcd12340", first), ("default-abcd12341", second),
                        ("abcd9", other)]:
        done = _cli(["logs", short], tmp_path, **env)
        assert done.returncode == 0, done.stderr
        assert f"{full} echo queued" in done.stdout
    assert _cli(["result", "abcd", "--wait-timeout", "100"], tmp_path, **env).returncode == 2


@pytest.mark.parametrize("given", ["ffffffff", "default-ffff", "hello", "priority-"])
def test_an_unknown_short_id_says_where_it_looked(given: str, redis_url: str,
                                                  tmp_path: Path) -> None:
    _enqueued_with_id(redis_url, "default-abcd1234" + "0" * 24)
    done = _cli(["logs", given], tmp_path, **_test_jobs_env(redis_url))
    assert done.returncode == 2
    line = _one_error_line(done)
    assert repr(given) in line and "full id" in line
