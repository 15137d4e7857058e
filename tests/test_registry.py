"""Job discovery, import, validation and merging in sandboxrunner.registry."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxrunner import registry
from sandboxrunner.errors import EXIT_CONFIG, JobLoadError, UnknownJob
from sandboxrunner.registry import (
    CronSpec,
    Registry,
    describe,
    load_job_file,
    load_registry,
    make_spec,
    register_job,
)
from tests.supervisors import ROOT


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No register_job leaks between tests, and no job module outlives its test."""
    monkeypatch.setattr(registry, "_REGISTERED", {})
    yield
    for name in [m for m in sys.modules if m == "sandboxrunner_jobs" or
                 m.startswith("sandboxrunner_jobs.")]:
        del sys.modules[name]


def write_job(jobs_dir: Path, filename: str, source: str) -> Path:
    jobs_dir.mkdir(parents=True, exist_ok=True)
    path = jobs_dir / filename
    path.write_text(textwrap.dedent(source))
    return path


def load_one(tmp_path: Path, source: str, filename: str = "job.py") -> registry.JobSpec:
    return load_job_file(write_job(tmp_path / "jobs", filename, source))


def load_error(tmp_path: Path, source: str, filename: str = "job.py") -> str:
    """The message of the JobLoadError that loading `source` raises; it must name the file."""
    path = write_job(tmp_path / "jobs", filename, source)
    with pytest.raises(JobLoadError) as info:
        load_registry(tmp_path / "jobs", include_plugins=False)
    message = str(info.value)
    assert str(path.resolve()) in message
    return message


# --------------------------------------------------------------------------- discovery


def test_a_sync_job_file_becomes_a_job_named_after_its_stem(tmp_path: Path) -> None:
    path = write_job(tmp_path / "jobs", "add.py", """
        def run(data, ctx):
            return data["a"] + data["b"] + ctx
    """)
    reg = load_registry(tmp_path / "jobs", include_plugins=False)
    spec = reg.get("add")
    assert reg.names() == ["add"]
    assert spec.queue == "default" and spec.arity == 2 and not spec.is_async
    assert spec.source == str(path.resolve())
    assert spec.module_name == "sandboxrunner_jobs.add"
    assert (spec.cron, spec.singleton, spec.timeout_ms, spec.retries, spec.backoff) == (
        None, None, None, 0, None)
    assert spec.call({"a": 1, "b": 2}, 10) == 13


def test_an_async_job_is_detected_and_call_returns_a_coroutine(tmp_path: Path) -> None:
    spec = load_one(tmp_path, """
        async def run(data, ctx):
            return data * 2
    """)
    assert spec.is_async
    assert asyncio.run(spec.call(21, None)) == 42


@pytest.mark.parametrize(
    ("signature", "returns", "arity"),
    [
        ("run()", "()", 0),
        ("run(data)", "(data,)", 1),
        ("run(data, ctx)", "(data, ctx)", 2),
        ("run(data=None)", "(data,)", 1),
        ("run(data, ctx=None)", "(data, ctx)", 2),
        ("run(data, ctx, extra=1)", "(data, ctx)", 2),
        ("run(*args)", "args", 2),
    ],
)
def test_the_handler_gets_as_many_arguments_as_it_takes(
    tmp_path: Path, signature: str, returns: str, arity: int
) -> None:
    spec = load_one(tmp_path, f"def {signature}:\n    return {returns}\n")
    assert spec.arity == arity
    assert spec.call("D", "C") == ("D", "C")[:arity]


def test_helper_files_dotfiles_and_subdirectories_are_not_jobs(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    write_job(jobs, "real.py", "def run(): return 1\n")
    write_job(jobs, "_helpers.py", "def run(): return 2\n")
    write_job(jobs, ".#real.py", "this is an editor lock file, not python\n")
    write_job(jobs, "notes.txt", "def run(): return 3\n")
    write_job(jobs / "sub", "nested.py", "def run(): return 4\n")
    assert load_registry(jobs, include_plugins=False).names() == ["real"]


def test_a_job_can_import_a_helper_from_its_own_folder(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    write_job(jobs, "_helpers.py", "def double(x):\n    return 2 * x\n")
    write_job(jobs, "uses_helper.py", """
        from sandboxrunner_jobs import _helpers

        def run(data):
            return _helpers.double(data)
    """)
    assert load_registry(jobs, include_plugins=False).get("uses_helper").call(4, None) == 8


def test_a_missing_jobs_dir_with_no_other_jobs_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(JobLoadError) as info:
        load_registry(tmp_path / "nope", include_plugins=False)
    message = str(info.value)
    assert message.startswith("No jobs found: ")
    assert f"jobs folder {(tmp_path / 'nope').resolve()} does not exist" in message
    assert "\n" not in message


def test_a_missing_jobs_dir_is_fine_when_register_job_gives_jobs_and_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    register_job("from_code", lambda: None)
    with caplog.at_level("WARNING", logger="sandboxrunner.registry"):
        reg = load_registry(tmp_path / "nope", include_plugins=False)
    assert reg.names() == ["from_code"]
    assert [r.getMessage() for r in caplog.records] == [
        f"jobs folder {(tmp_path / 'nope').resolve()} does not exist; serving only the 1 "
        "job(s) from register_job and plugins"]


def test_an_existing_empty_jobs_dir_is_an_empty_registry(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    assert load_registry(tmp_path / "jobs", include_plugins=False).names() == []


def test_a_jobs_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "worker_jobs"
    not_a_dir.write_text("")
    with pytest.raises(JobLoadError, match="is not a directory") as info:
        load_registry(not_a_dir, include_plugins=False)
    assert str(not_a_dir.resolve()) in str(info.value)


def test_handlers_pickle_by_reference_to_their_module(tmp_path: Path) -> None:
    spec = load_one(tmp_path, "def run(data):\n    return data\n", filename="echo.py")
    payload = pickle.dumps(spec.handler)
    assert b"sandboxrunner_jobs.echo" in payload
    assert pickle.loads(payload) is spec.handler
    assert sys.modules["sandboxrunner_jobs.echo"].run is spec.handler


# --------------------------------------------------------------------------- module hygiene


def test_a_second_directory_with_the_same_file_names_sees_none_of_the_first(
    tmp_path: Path,
) -> None:
    for folder in ("one", "two"):
        write_job(tmp_path / folder, "_helpers.py", f"WHERE = {folder!r}\n")
        write_job(tmp_path / folder, "hello.py", f"""
            from sandboxrunner_jobs import _helpers

            def run():
                return ({folder!r}, _helpers.WHERE)
        """)
    first = load_registry(tmp_path / "one", include_plugins=False).get("hello")
    second = load_registry(tmp_path / "two", include_plugins=False).get("hello")
    assert first.call(None, None) == ("one", "one")
    assert second.call(None, None) == ("two", "two")
    module = sys.modules["sandboxrunner_jobs.hello"]
    assert module.__file__ == str((tmp_path / "two" / "hello.py").resolve())
    assert sys.modules["sandboxrunner_jobs"].__path__ == [str((tmp_path / "two").resolve())]


def test_loading_the_same_directory_again_reuses_the_modules(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    marker = tmp_path / "executions.txt"
    write_job(jobs, "counted.py", f"""
        with open({str(marker)!r}, "a") as f:
            f.write("x")
        def run():
            return 1
    """)
    first = load_registry(jobs, include_plugins=False)
    write_job(jobs, "added_later.py", "def run(): return 2\n")
    second = load_registry(jobs, include_plugins=False)
    assert marker.read_text() == "x"
    assert second.get("counted").handler is first.get("counted").handler
    assert load_job_file(jobs / "counted.py").handler is first.get("counted").handler
    assert second.names() == ["added_later", "counted"]


def test_a_job_imported_by_another_job_runs_its_module_once_per_load(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    marker = tmp_path / "executions.txt"
    # a_derived sorts first, so z_base is first imported by it, then found again by the loader.
    write_job(jobs, "z_base.py", f"""
        with open({str(marker)!r}, "a") as f:
            f.write("x")
        def run():
            return "base"
    """)
    write_job(jobs, "a_derived.py", """
        from sandboxrunner_jobs import z_base
        def run():
            return z_base.run() + "+derived"
    """)
    reg = load_registry(jobs, include_plugins=False)
    assert marker.read_text() == "x"
    assert reg.get("a_derived").call(None, None) == "base+derived"
    assert sys.modules["sandboxrunner_jobs.z_base"].run is reg.get("z_base").handler


# --------------------------------------------------------------------------- load errors


def test_an_import_failure_carries_the_original_traceback(tmp_path: Path) -> None:
    message = load_error(tmp_path, """
        import os
        RATIO = 1 / 0
        def run(): pass
    """, filename="broken.py")
    assert "import failed with ZeroDivisionError" in message
    assert "RATIO = 1 / 0" in message and "Traceback" in message
    with pytest.raises(JobLoadError) as info:
        load_job_file(tmp_path / "jobs" / "broken.py")
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "sandboxrunner_jobs.broken" not in sys.modules


def test_a_sys_exit_at_import_is_a_load_error_not_an_exit(tmp_path: Path) -> None:
    message = load_error(tmp_path, "import sys\nsys.exit(3)\n")
    assert "import failed with SystemExit" in message


def test_a_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "def run():\n    return (\n\nx = 1\n")
    assert "syntax error at line" in message


def test_a_file_without_run_is_an_error(tmp_path: Path) -> None:
    assert "defines no function 'run'" in load_error(tmp_path, "def main(): pass\n")


def test_a_run_that_is_not_callable_is_an_error(tmp_path: Path) -> None:
    assert "'run' is not callable" in load_error(tmp_path, "run = 42\n")


def test_a_handler_requiring_three_arguments_is_an_error(tmp_path: Path) -> None:
    message = load_error(tmp_path, "def run(data, ctx, extra): pass\n")
    assert "handler must accept (data, ctx), (data) or ()" in message
    assert "extra" in message


def test_a_handler_requiring_a_keyword_argument_is_an_error(tmp_path: Path) -> None:
    assert "'flag'" in load_error(tmp_path, "def run(data, *, flag): pass\n")


def test_an_unknown_worker_lists_the_queues(tmp_path: Path) -> None:
    message = load_error(tmp_path, "worker = 'fast'\ndef run(): pass\n")
    assert "unknown worker 'fast'" in message and "default, priority" in message


def test_the_priority_worker_puts_the_job_on_that_queue(tmp_path: Path) -> None:
    write_job(tmp_path / "jobs", "urgent.py", "worker = 'priority'\ndef run(): pass\n")
    write_job(tmp_path / "jobs", "normal.py", "def run(): pass\n")
    reg = load_registry(tmp_path / "jobs", include_plugins=False)
    assert [s.name for s in reg.for_queue("priority")] == ["urgent"]
    assert [s.name for s in reg.for_queue("default")] == ["normal"]
    with pytest.raises(ValueError, match="unknown queue 'fast'"):
        reg.for_queue("fast")


@pytest.mark.parametrize("value", ["'yes'", "1", "'global'"])
def test_a_singleton_that_is_not_true_or_callable_is_an_error(
    tmp_path: Path, value: str
) -> None:
    message = load_error(tmp_path, f"singleton = {value}\ndef run(): pass\n")
    assert "singleton must be True, False, None or a key function" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("False", None), ("None", None), ("True", True)],
)
def test_boolean_singletons_are_accepted(tmp_path: Path, value: str, expected: Any) -> None:
    spec = load_one(tmp_path, f"singleton = {value}\ndef run(): pass\n")
    assert spec.singleton is expected


def test_a_singleton_key_function_is_kept(tmp_path: Path) -> None:
    spec = load_one(tmp_path, """
        def singleton(data):
            return data["user"]
        def run(data): pass
    """)
    assert callable(spec.singleton) and spec.singleton({"user": "u1"}) == "u1"
    assert describe(spec)["singleton"] == "keyed"


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("'61 * * * *'", "invalid cron pattern '61 * * * *'"),
        ("'every day'", "cron pattern 'every day' has 2 fields"),
        ("'* * * * * * *'", "cron pattern '* * * * * * *' has 7 fields"),
        ("'0 0 31 2 *'", "invalid cron pattern '0 0 31 2 *'"),
        ("{'data': 1}", "cron dict has no 'pattern' key"),
        ("{'pattern': '* * * * *', 'when': 1}", "cron has unknown keys ['when']"),
        ("{'pattern': '* * * * *', 'data': {1, 2}}", "cron data is not JSON-serialisable"),
        ("{'pattern': '* * * * *', 'data': float('nan')}", "cron data is not JSON"),
        ("{'pattern': '* * * * *', 'tz': 'Mars/Olympus'}", "unknown cron tz 'Mars/Olympus'"),
        ("{'pattern': '* * * * *', 'tz': 5}", "cron tz must be a string"),
        ("42", "cron must be a pattern string or a dict"),
        ("{'pattern': 5}", "cron pattern must be a string"),
    ],
)
def test_a_bad_cron_is_an_error_naming_the_problem(
    tmp_path: Path, cron: str, problem: str
) -> None:
    assert problem in load_error(tmp_path, f"cron = {cron}\ndef run(): pass\n")


def test_valid_cron_forms_become_cron_specs(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    write_job(jobs, "plain.py", "cron = '*/5 * * * *'\ndef run(): pass\n")
    write_job(jobs, "seconds.py", "cron = '* * * * * 30'\ndef run(): pass\n")
    write_job(jobs, "full.py", """
        cron = {"pattern": "0 9 * * 1", "data": {"report": "weekly"}, "tz": "Europe/Paris"}
        def run(data): pass
    """)
    reg = load_registry(jobs, include_plugins=False)
    assert reg.get("plain").cron == CronSpec("*/5 * * * *", None, "UTC")
    assert reg.get("seconds").cron == CronSpec("* * * * * 30")
    assert reg.get("full").cron == CronSpec("0 9 * * 1", {"report": "weekly"}, "Europe/Paris")
    assert describe(reg.get("full"))["cron"] == "0 9 * * 1"


def test_a_six_field_pattern_that_looks_seconds_first_is_logged_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = tmp_path / "jobs"
    path = write_job(jobs, "tick.py", "cron = '*/2 * * * * *'\ndef run(): pass\n")
    write_job(jobs, "fine.py", "cron = '* * * * * */2'\ndef run(): pass\n")
    with caplog.at_level("WARNING", logger="sandboxrunner.jobspec"):
        load_registry(jobs, include_plugins=False)
    (record,) = caplog.records
    assert record.getMessage().startswith(
        f"job 'tick' (file {path.resolve()}): cron pattern '*/2 * * * * *' has six fields")


@pytest.mark.parametrize("timeout", ["0", "-5", "True", "'500'", "1.5"])
def test_a_timeout_that_is_not_a_positive_int_is_an_error(
    tmp_path: Path, timeout: str
) -> None:
    message = load_error(tmp_path, f"timeout = {timeout}\ndef run(): pass\n")
    assert "timeout must be a positive integer (milliseconds)" in message


@pytest.mark.parametrize("retries", ["-1", "True", "'3'", "None"])
def test_retries_that_are_not_a_non_negative_int_are_an_error(
    tmp_path: Path, retries: str
) -> None:
    message = load_error(tmp_path, f"retries = {retries}\ndef run(): pass\n")
    assert "retries must be a non-negative integer" in message


@pytest.mark.parametrize(
    ("backoff", "problem"),
    [
        ("'soon'", "backoff must be a delay in ms or a dict"),
        ("-10", "backoff delay must be a non-negative integer"),
        ("{'type': 'fixed'}", "backoff must have exactly the keys 'type' and 'delay'"),
        ("{'type': 'fixed', 'delay': 5, 'jitter': 1}", "exactly the keys"),
        ("{'type': 'linear', 'delay': 5}", "backoff type 'linear' is unknown"),
        ("{'type': 'fixed', 'delay': 2.5}", "backoff delay must be a non-negative integer"),
    ],
)
def test_a_bad_backoff_is_an_error_naming_the_problem(
    tmp_path: Path, backoff: str, problem: str
) -> None:
    assert problem in load_error(tmp_path, f"retries = 2\nbackoff = {backoff}\ndef run(): pass\n")


def test_options_are_read_from_module_attributes(tmp_path: Path) -> None:
    spec = load_one(tmp_path, """
        timeout = 250
        retries = 3
        backoff = 100
        singleton = True
        def run(): pass
    """)
    assert (spec.timeout_ms, spec.retries, spec.singleton) == (250, 3, True)
    assert spec.backoff == {"type": "fixed", "delay": 100}
    row = describe(spec)
    assert row == {"name": "job", "queue": "default", "cron": None, "singleton": "global",
                   "timeout_ms": 250, "retries": 3, "rate_limit": None,
                   "source": spec.source}


def test_an_exponential_backoff_dict_is_kept(tmp_path: Path) -> None:
    spec = load_one(tmp_path, """
        retries = 5
        backoff = {"type": "exponential", "delay": 50}
        def run(): pass
    """)
    assert spec.backoff == {"type": "exponential", "delay": 50}


def test_a_file_name_that_cannot_be_a_job_name_is_an_error(tmp_path: Path) -> None:
    assert "name 'send.email' is invalid" in load_error(
        tmp_path, "def run(): pass\n", filename="send.email.py")


# --------------------------------------------------------------------------- registry api


def test_get_of_an_unknown_job_lists_the_known_ones() -> None:
    spec = make_spec("known", lambda: None, source="test")
    with pytest.raises(UnknownJob, match="unknown job 'nope'; available jobs: known"):
        Registry({"known": spec}).get("nope")


def test_names_are_sorted() -> None:
    jobs = {n: make_spec(n, lambda: None, source="test") for n in ("b", "a", "c")}
    assert Registry(jobs).names() == ["a", "b", "c"]


def test_registered_jobs_are_merged_into_the_registry(tmp_path: Path) -> None:
    write_job(tmp_path / "jobs", "from_file.py", "def run(): pass\n")

    async def handler(data: Any) -> Any:
        return data

    spec = register_job("from_code", handler, worker="priority", timeout=100)
    assert spec.source == "register_job" and spec.is_async and spec.arity == 1
    reg = load_registry(tmp_path / "jobs", include_plugins=False)
    assert reg.names() == ["from_code", "from_file"]
    assert reg.get("from_code") is spec
    # With no jobs dir at all the registered jobs are still there.
    assert load_registry(tmp_path / "none", include_plugins=False).names() == ["from_code"]


def test_a_registered_job_clashing_with_a_file_job_names_both_sources(tmp_path: Path) -> None:
    path = write_job(tmp_path / "jobs", "report.py", "def run(): pass\n")
    register_job("report", lambda: None)
    with pytest.raises(JobLoadError) as info:
        load_registry(tmp_path / "jobs", include_plugins=False)
    message = str(info.value)
    assert "job name 'report' is defined twice" in message
    assert str(path.resolve()) in message and "register_job" in message


def test_register_job_validates_like_a_file() -> None:
    with pytest.raises(JobLoadError, match=r"job 'bad' \(register_job\): unknown worker 'x'"):
        register_job("bad", lambda: None, worker="x")
    with pytest.raises(JobLoadError, match="job name 'a:b' .* is invalid"):
        register_job("a:b", lambda: None)
    assert registry._REGISTERED == {}


def test_make_spec_builds_a_spec_from_a_plugin_style_dict() -> None:
    def handler(data: Any, ctx: Any) -> Any:
        return (data, ctx)

    options: dict[str, Any] = {"cron": {"pattern": "0 * * * *", "data": [1]}, "worker": "priority",
               "singleton": lambda data: data, "timeout": 5000, "retries": 1,
               "backoff": {"type": "exponential", "delay": 10}}
    spec = make_spec("plug", handler, source="plugin:pkg", **options)
    assert spec.cron == CronSpec("0 * * * *", [1], "UTC")
    assert (spec.queue, spec.timeout_ms, spec.retries, spec.arity) == ("priority", 5000, 1, 2)
    assert spec.source == "plugin:pkg" and spec.module_name is None
    assert spec.call("d", "c") == ("d", "c")
    with pytest.raises(JobLoadError, match=r"job 'plug' \(plugin:pkg\): timeout must be"):
        make_spec("plug", handler, source="plugin:pkg", timeout=-1)


# --------------------------------------------------------------------------- plugins


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module `sr_test_plugin` whose attributes entry points can name."""
    write_job(tmp_path / "site", "sr_test_plugin.py", """
        import types

        def handler(data):
            return ("dict", data)

        cleanup = types.ModuleType("sr_test_plugin.cleanup")
        cleanup.run = lambda: "module"
        cleanup.worker = "priority"

        JOBS = {"plugin_dict": {"handler": handler, "timeout": 10}, "plugin_mod": cleanup}
        CLASH = {"from_file": {"handler": handler}}
        BAD_KEY = {"x": {"handler": handler, "when": 1}}
        NOT_A_MAPPING = [handler]
    """)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield "sr_test_plugin"
    sys.modules.pop("sr_test_plugin", None)


def use_entry_points(monkeypatch: pytest.MonkeyPatch, **eps: str) -> None:
    found = [importlib.metadata.EntryPoint(n, v, registry.PLUGIN_GROUP) for n, v in eps.items()]

    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        return found if group == registry.PLUGIN_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_plugin_jobs_load_from_modules_and_dicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin_module: str
) -> None:
    use_entry_points(monkeypatch, mypkg=f"{plugin_module}:JOBS")
    (tmp_path / "jobs").mkdir()
    reg = load_registry(tmp_path / "jobs")
    assert reg.get("plugin_dict").call(1, None) == ("dict", 1)
    assert reg.get("plugin_dict").source == "plugin:mypkg"
    assert reg.get("plugin_mod").queue == "priority"
    assert reg.get("plugin_mod").module_name == "sr_test_plugin.cleanup"
    assert load_registry(tmp_path / "jobs", include_plugins=False).names() == []


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("sr_test_plugin:CLASH", "job name 'from_file' is defined twice"),
        ("sr_test_plugin:BAD_KEY", "unknown keys: ['when']"),
        ("sr_test_plugin:NOT_A_MAPPING", "must load to a mapping"),
        ("sr_test_plugin:MISSING", "failed to load with AttributeError"),
        ("no_such_module_xyz:JOBS", "failed to load with ModuleNotFoundError"),
    ],
)
def test_a_broken_plugin_names_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin_module: str,
    target: str, problem: str,
) -> None:
    write_job(tmp_path / "jobs", "from_file.py", "def run(): pass\n")
    use_entry_points(monkeypatch, brokenpkg=target)
    with pytest.raises(JobLoadError) as info:
        load_registry(tmp_path / "jobs")
    assert "brokenpkg" in str(info.value) and problem in str(info.value)


# --------------------------------------------------------------------------- the CLI


def sandboxrunner(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The `sandboxrunner` command in a subprocess, with no configuration from this shell."""
    clean = {k: v for k, v in os.environ.items()
             if k != "REDIS_URL" and not k.startswith("SANDBOXRUNNER_")}
    clean.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "sandboxrunner", *args], cwd=cwd, env=clean,
                          capture_output=True, text=True, timeout=60)


def test_start_with_a_jobs_dir_that_does_not_exist_exits_3_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    done = sandboxrunner(["start", "--jobs-dir", str(missing)], tmp_path,
                         REDIS_URL="redis://127.0.0.1:1/0")
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"jobs folder {missing} does not exist" in done.stderr


def test_start_and_jobs_from_a_folder_without_worker_jobs_exit_3_naming_it(
        tmp_path: Path) -> None:
    for command in (["start"], ["jobs"]):
        done = sandboxrunner(command, tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
        assert done.returncode == EXIT_CONFIG, (command, done.stdout, done.stderr)
        assert done.stderr.startswith("error: No jobs found: ")
        assert f"jobs folder {tmp_path / 'worker_jobs'} does not exist" in done.stderr
        assert done.stderr.count("\n") == 1


def test_jobs_in_an_empty_jobs_folder_says_no_jobs_found_and_where(tmp_path: Path) -> None:
    (tmp_path / "worker_jobs").mkdir()
    done = sandboxrunner(["jobs"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"No jobs found in {tmp_path / 'worker_jobs'} ")
