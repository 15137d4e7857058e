"""The `sandboxrunner` command as a user runs it, in fresh project folders."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.clirun import (
    CLI,
    cli_env,
    cli_supervisor,
    jobs_env,
    no_server_left_in,
    one_error_line,
    project_with,
    run_cli,
)
from tests.supervisors import TEST_JOBS

HELLO = """
    def run(data, ctx):
        ctx.log("hello", data=data)
        return {"hello": data["name"]}
"""


def test_embedded_server_runs_a_job_end_to_end_in_a_fresh_folder(tmp_path: Path) -> None:
    project = project_with(tmp_path, {"hello": HELLO})
    supervisor = subprocess.Popen(CLI + ["start"], cwd=project, env=cli_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        done = run_cli(["run", "hello", '{"name": "ada"}'], project)
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
        assert run_cli(["redis", "stop"], project).returncode == 0


def test_jobs_lists_the_discovered_jobs(tmp_path: Path) -> None:
    project = project_with(tmp_path, {"hello": HELLO, "urgent": "worker = 'priority'\n"
                                  "timeout = 500\ndef run():\n    return 1\n"})
    done = run_cli(["jobs"], project)
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
    project = project_with(tmp_path, {"broken": body})
    for command in (["jobs"], ["start"]):
        done = run_cli(command, project, timeout=30)
        assert done.returncode != 0
        assert "broken.py" in done.stderr
        assert problem in done.stderr


def test_unknown_worker_name_is_refused_with_the_supported_ones(tmp_path: Path) -> None:
    done = run_cli(["start", "--workers", "urgent"], project_with(tmp_path, {"hello": HELLO}))
    assert done.returncode != 0
    assert "default" in done.stderr and "priority" in done.stderr


def test_run_reports_bad_input_and_failures_with_exit_codes(redis_url: str,
                                                            tmp_path: Path) -> None:
    env = {"REDIS_URL": redis_url, "SANDBOXRUNNER_JOBS_DIR": str(TEST_JOBS)}
    bad_json = run_cli(["run", "echo", "{not json"], tmp_path, **env)
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    unknown = run_cli(["run", "nope", "1"], tmp_path, **env)
    assert unknown.returncode == 2 and "available jobs" in unknown.stderr
    supervisor = subprocess.Popen(CLI + ["start"], cwd=tmp_path, env=cli_env(**env),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        failed = run_cli(["run", "fail", '{"card": "1"}'], tmp_path, **env)
        assert failed.returncode == 1
        assert "PaymentDeclined" in failed.stderr and "card 1 declined" in failed.stderr
        timed = run_cli(["run", "slow", '{"seconds": 2}', "--timeout", "200"], tmp_path, **env)
        assert timed.returncode == 1 and "timed out" in timed.stderr
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=20)


def test_missing_redis_is_a_clear_error_without_password(tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_cli(["run", "hello", "1"], project_with(tmp_path, {"hello": HELLO}),
                REDIS_URL="redis://:hunter2@127.0.0.1:1/0")
    assert done.returncode == 4
    assert "127.0.0.1:1" in done.stderr and "hunter2" not in done.stderr
    assert time.monotonic() - started < 20


def test_config_comes_from_pyproject(tmp_path: Path) -> None:
    project = project_with(tmp_path, {"hello": HELLO})
    (project / "pyproject.toml").write_text("[tool.sandboxrunner]\njobs_dir = 'jobs_here'\n")
    (project / "worker_jobs").rename(project / "jobs_here")
    done = run_cli(["jobs"], project)
    assert done.returncode == 0 and "hello" in done.stdout
    (project / "pyproject.toml").write_text("[tool.sandboxrunner]\nno_such_key = 1\n")
    done = run_cli(["jobs"], project)
    assert done.returncode != 0 and "no_such_key" in done.stderr


# --------------------------------------------------------------------------- the project


def test_run_job_outside_any_project_names_the_folder_and_starts_no_server(
        tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = "from sandboxrunner import run_job; run_job('hello', {'name': 'ada'})"
    with no_server_left_in(elsewhere):
        done = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=cli_env(),
                              capture_output=True, text=True, timeout=60)
        cli = run_cli(["run", "hello", '{"name": "ada"}'], elsewhere)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sandboxrunner.errors.ConfigError: ")
    assert f"no sandboxrunner project found in {elsewhere}" in last and "--project" in last
    assert cli.returncode == 3
    assert f"no sandboxrunner project found in {elsewhere}" in one_error_line(cli)
    assert not (elsewhere / ".sandboxrunner").exists()


def test_a_job_run_outside_any_project_says_where_it_looked(redis_url: str,
                                                            tmp_path: Path) -> None:
    done = run_cli(["run", "hello", "{}"], tmp_path, REDIS_URL=redis_url)
    assert done.returncode == 3
    line = one_error_line(done)
    assert f"no sandboxrunner project found in {tmp_path}" in line
    assert "--project" in line and "SANDBOXRUNNER_PROJECT" in line


def test_an_unknown_job_names_the_jobs_folder_it_looked_in(redis_url: str,
                                                          tmp_path: Path) -> None:
    (tmp_path / "worker_jobs").mkdir()
    done = run_cli(["run", "hello", "{}"], tmp_path, REDIS_URL=redis_url)
    assert done.returncode == 2
    line = one_error_line(done)
    assert "unknown job 'hello'" in line and str(tmp_path / "worker_jobs") in line


def test_the_project_is_found_from_a_subfolder_or_named_from_anywhere(tmp_path: Path) -> None:
    project = project_with(tmp_path / "app", {"hello": HELLO})
    (project / "src" / "web").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, args, env in [(project / "src" / "web", [], {}),
                           (elsewhere, ["--project", str(project)], {}),
                           (elsewhere, [], {"SANDBOXRUNNER_PROJECT": str(project)})]:
        done = run_cli(["jobs", *args], cwd, **env)
        assert done.returncode == 0, done.stderr
        assert "hello" in done.stdout
    missing = run_cli(["jobs", "--project", str(tmp_path / "nope")], elsewhere)
    assert missing.returncode == 3
    assert one_error_line(missing) == f"error: --project: {tmp_path / 'nope'} is not a folder"


def test_read_only_commands_never_start_the_embedded_server(tmp_path: Path) -> None:
    project = project_with(tmp_path, {"hello": HELLO})
    job_id = "default-" + "0" * 32
    with no_server_left_in(project):
        for command in (["logs", job_id], ["logs", "-f", job_id], ["result", job_id],
                        ["cron"]):
            done = run_cli(command, project, timeout=20)
            assert done.returncode == 4, (command, done.stderr)
            line = one_error_line(done)
            assert f"no embedded server runs for {project}" in line
            assert "sandboxrunner start" in line
        assert run_cli(["jobs"], project).returncode == 0
    assert not (project / ".sandboxrunner").exists()


def test_a_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    project = project_with(tmp_path, {"hello": HELLO})
    done = run_cli(["start", "--workers", "urgent"], project)
    assert done.returncode == 3
    assert one_error_line(done) == ("error: --workers: unknown worker 'urgent'; "
                                     "expected some of: default, priority")
    done = run_cli(["start", "--concurrency", "0"], project)
    assert done.returncode == 3
    assert one_error_line(done).startswith("error: --concurrency: expected a positive integer")


# --------------------------------------------------------------------------- run and result


def test_a_wait_timeout_has_its_own_exit_code_and_result_fetches_the_job_later(
        redis_url: str, tmp_path: Path) -> None:
    env = jobs_env(redis_url)
    with cli_supervisor(tmp_path, **env):
        # long enough that a second command, started under load, still finds it running
        waited = run_cli(["run", "slow", '{"seconds": 4}', "--wait-timeout", "200"], tmp_path,
                         **env)
        assert waited.returncode == 5, waited.stderr
        line = one_error_line(waited)
        job_id = line.split("gave up waiting for job ")[1].split()[0]
        assert f"`sandboxrunner result {job_id}`" in line
        too_soon = run_cli(["result", job_id, "--wait-timeout", "100"], tmp_path, **env)
        assert too_soon.returncode == 5 and job_id in one_error_line(too_soon)
        fetched = run_cli(["result", job_id], tmp_path, **env)
        assert fetched.returncode == 0, fetched.stderr
        assert json.loads(fetched.stdout) == {"slept": 4, "tag": None}
        failed = run_cli(["run", "fail", '{"card": "7"}'], tmp_path, **env)
        assert failed.returncode == 1
    unknown = run_cli(["result", "default-" + "0" * 32], tmp_path, **env)
    assert unknown.returncode == 2 and "default-" + "0" * 32 in one_error_line(unknown)


NESTED_JOBS = {
    "outer": """
        from sandboxrunner import run_job

        def run(data):
            return {"inner": run_job("inner", data)}
        """,
    "inner": "def run(data):\n    return data\n",
}


@pytest.mark.parametrize("mode", ["--threads", "--separate-process"])
def test_a_nested_run_job_uses_the_redis_its_supervisor_was_started_with(
        redis_url: str, tmp_path: Path, mode: str) -> None:
    # the URL is a flag, not in the environment: a nested call must not look elsewhere
    project = project_with(tmp_path, NESTED_JOBS)
    with no_server_left_in(project), cli_supervisor(project, "--redis-url", redis_url, mode,
                                                     "-c", "2", url=redis_url):
        done = run_cli(["run", "outer", '{"a": 1}', "--redis-url", redis_url,
                        "--wait-timeout", "8000"], project)
    assert (done.returncode, done.stdout.strip()) == (0, '{"inner": {"a": 1}}'), done.stderr
    assert not (project / ".sandboxrunner").exists()  # no embedded server was started


def test_result_of_a_failed_job_exits_1_with_its_error(redis_url: str, tmp_path: Path) -> None:
    env = jobs_env(redis_url)
    with cli_supervisor(tmp_path, **env):
        script = ("from sandboxrunner import enqueue; "
                  "print(enqueue('fail', {'card': '9'}).id)")
        job_id = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=cli_env(**env),
                                capture_output=True, text=True, timeout=60,
                                check=True).stdout.strip()
        done = run_cli(["result", job_id], tmp_path, **env)
    assert done.returncode == 1
    assert "PaymentDeclined" in done.stderr and "card 9 declined" in done.stderr
    assert "Traceback" in done.stderr  # the job's own, from its worker


def test_run_with_no_supervisor_exits_6_and_the_job_stays_queued(redis_url: str,
                                                                  tmp_path: Path) -> None:
    env = jobs_env(redis_url)
    done = run_cli(["run", "echo", '{"x": 1}'], tmp_path, **env)
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
    top_help = run_cli(["--help"], tmp_path)
    assert top_help.returncode == 0
    for code, meaning in [(0, "done"), (1, "failed"), (2, "bad input"), (3, "configuration"),
                          (4, "Redis"), (5, "--wait-timeout"), (6, "no supervisor")]:
        assert any(line.strip().startswith(f"{code} ") and meaning in line
                   for line in top_help.stdout.splitlines()), (code, top_help.stdout)
    for path in _commands():
        done = run_cli([*path, "--help"], tmp_path)
        assert done.returncode == 0, done.stderr
        assert "<bool>" not in done.stdout, (path, done.stdout)
        assert "Exit codes:" in done.stdout or path[0] == "redis", (path, done.stdout)


@pytest.mark.parametrize("command", ["start", "run", "result", "logs", "cron", "top"])
def test_every_command_that_talks_to_redis_takes_redis_url(command: str,
                                                          tmp_path: Path) -> None:
    done = run_cli([command, "--help"], tmp_path)
    assert done.returncode == 0 and "--redis-url URL" in done.stdout, done.stdout
    assert "--project DIR" in done.stdout


