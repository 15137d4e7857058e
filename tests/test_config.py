"""Layering, parsing and validation of sandboxrunner.config."""

from __future__ import annotations

import os
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from sandboxrunner.config import (
    Config,
    env_var_name,
    find_project_dir,
    load_config,
    project_hint,
    redact_url,
)
from sandboxrunner.errors import ConfigError


def write_pyproject(project: Path, section: str) -> Path:
    project.mkdir(parents=True, exist_ok=True)
    path = project / "pyproject.toml"
    path.write_text("[project]\nname = 'demo'\n\n[tool.sandboxrunner]\n"
                    + textwrap.dedent(section))
    return path


def load(project: Path, overrides: dict[str, Any] | None = None,
         env: dict[str, str] | None = None) -> Config:
    return load_config(overrides, project_dir=project, env=env or {})


def config_error(project: Path, overrides: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(project, overrides, env)
    return str(info.value)


# --------------------------------------------------------------------------- defaults


def test_defaults_apply_without_pyproject_env_or_overrides(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.redis_url is None
    assert config.jobs_dir == tmp_path.resolve() / "worker_jobs"
    assert config.project_dir == tmp_path.resolve()
    assert config.workers == ("default", "priority")
    assert (config.job_timeout, config.result_ttl, config.lease_ms, config.heartbeat_ms) == (
        30_000, 3_600_000, 10_000, 1_000)
    assert (config.max_stalled, config.key_prefix, config.max_data_size) == (1, "sr", 0.5)
    assert (config.auto_start, config.production, config.use_separate_process) == (
        True, False, False)
    assert config.child_limits is None and config.concurrency is None


def test_a_pyproject_without_our_section_gives_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert load(tmp_path) == Config(jobs_dir=tmp_path.resolve() / "worker_jobs",
                                    project_dir=tmp_path.resolve())


def test_effective_concurrency_depends_on_the_mode() -> None:
    assert Config().effective_concurrency() == 300
    assert Config(use_separate_process=True).effective_concurrency() == (os.cpu_count() or 1)
    assert Config(concurrency=7, use_separate_process=True).effective_concurrency() == 7


def test_every_setting_has_an_environment_variable() -> None:
    found_not_set = ("project_dir", "project_found")
    names = {env_var_name(f.name) for f in fields(Config) if f.name not in found_not_set}
    assert {"REDIS_URL", "WORKERS", "SANDBOXRUNNER_JOB_TIMEOUT",
            "SANDBOXRUNNER_CHILD_LIMITS"} <= names
    assert len(names) == len(fields(Config)) - len(found_not_set)


# --------------------------------------------------------------------------- precedence


def test_pyproject_overrides_defaults(tmp_path: Path) -> None:
    write_pyproject(tmp_path, """
        redis_url = "redis://cache:6380/2"
        jobs_dir = "src/jobs"
        workers = ["priority"]
        job_timeout = 5000
        use_separate_process = true
        max_data_size = 2
        child_limits = { cpu_seconds = 10, open_files = 64 }
    """)
    config = load(tmp_path)
    assert config.redis_url == "redis://cache:6380/2"
    assert config.jobs_dir == tmp_path.resolve() / "src" / "jobs"
    assert config.workers == ("priority",)
    assert (config.job_timeout, config.use_separate_process) == (5000, True)
    assert config.max_data_size == 2.0 and isinstance(config.max_data_size, float)
    assert config.child_limits == {"cpu_seconds": 10, "open_files": 64}


def test_environment_overrides_pyproject(tmp_path: Path) -> None:
    write_pyproject(tmp_path, 'job_timeout = 5000\nredis_url = "redis://a"\nlease_ms = 9000\n')
    config = load(tmp_path, env={
        "REDIS_URL": "redis://b:6379",
        "WORKERS": "priority, default",
        "SANDBOXRUNNER_JOB_TIMEOUT": "7000",
        "SANDBOXRUNNER_USE_SEPARATE_PROCESS": "yes",
        "SANDBOXRUNNER_AUTO_START": "0",
        "SANDBOXRUNNER_CHILD_LIMITS": '{"address_space_mib": 512}',
        "SANDBOXRUNNER_MAX_DATA_SIZE": "1.5",
        "SANDBOXRUNNER_ENV": "production",
    })
    assert config.redis_url == "redis://b:6379"
    assert config.workers == ("priority", "default")
    assert (config.job_timeout, config.lease_ms) == (7000, 9000)
    assert (config.use_separate_process, config.auto_start, config.production) == (
        True, False, True)
    assert config.child_limits == {"address_space_mib": 512}
    assert config.max_data_size == 1.5


def test_overrides_beat_the_environment_and_none_means_not_given(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "job_timeout = 5000\nconcurrency = 4\n")
    config = load(
        tmp_path,
        overrides={"job_timeout": 100, "workers": "default", "concurrency": None,
                   "jobs_dir": tmp_path / "elsewhere"},
        env={"SANDBOXRUNNER_JOB_TIMEOUT": "7000", "WORKERS": "priority"},
    )
    assert config.job_timeout == 100
    assert config.workers == ("default",)
    assert config.concurrency == 4
    assert config.jobs_dir == tmp_path / "elsewhere"


def test_empty_environment_variables_count_as_unset(tmp_path: Path) -> None:
    config = load(tmp_path, env={"REDIS_URL": "", "SANDBOXRUNNER_JOB_TIMEOUT": "  "})
    assert config.redis_url is None and config.job_timeout == 30_000


def test_sandboxrunner_env_development_turns_production_off(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "production = true\n")
    assert load(tmp_path).production is True
    assert load(tmp_path, env={"SANDBOXRUNNER_ENV": "development"}).production is False


def test_workers_are_deduplicated_in_order(tmp_path: Path) -> None:
    config = load(tmp_path, overrides={"workers": ["priority", "default", "priority"]})
    assert config.workers == ("priority", "default")
    assert load(tmp_path, env={"WORKERS": "default,,default"}).workers == ("default",)


def test_the_project_is_the_nearest_folder_with_our_pyproject_section(tmp_path: Path) -> None:
    write_pyproject(tmp_path / "proj", "key_prefix = 'found'\n")
    deep = tmp_path / "proj" / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_project_dir(deep) == (tmp_path / "proj").resolve()


def test_a_worker_jobs_folder_marks_a_project_too(tmp_path: Path) -> None:
    (tmp_path / "app" / "worker_jobs").mkdir(parents=True)
    (tmp_path / "app" / "web").mkdir()
    assert find_project_dir(tmp_path / "app" / "web") == (tmp_path / "app").resolve()
    assert find_project_dir(tmp_path / "app") == (tmp_path / "app").resolve()


def test_a_pyproject_without_our_section_is_walked_past(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "key_prefix = 'outer'\n")
    inner = tmp_path / "libs" / "inner"
    inner.mkdir(parents=True)
    (inner / "pyproject.toml").write_text("[project]\nname = 'inner'\n")
    assert find_project_dir(inner) == tmp_path.resolve()


def test_no_project_above_a_folder_is_none(tmp_path: Path) -> None:
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    assert find_project_dir(lonely) is None


def test_load_config_finds_the_project_from_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pyproject(tmp_path, "key_prefix = 'fromcwd'\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    config = load_config(env={})
    assert config.key_prefix == "fromcwd"
    assert config.project_dir == tmp_path.resolve() and config.project_found


def test_without_a_project_the_cwd_is_used_and_marked_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.project_dir == tmp_path.resolve() and not config.project_found
    assert config.jobs_dir == tmp_path.resolve() / "worker_jobs"
    hint = project_hint(config)
    assert str(tmp_path.resolve()) in hint and "--project" in hint
    assert "SANDBOXRUNNER_PROJECT" in hint and "[tool.sandboxrunner]" in hint


def test_sandboxrunner_project_names_the_project_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pyproject(tmp_path / "proj", "key_prefix = 'viaenv'\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load_config(env={"SANDBOXRUNNER_PROJECT": str(tmp_path / "proj")})
    assert config.project_dir == (tmp_path / "proj").resolve() and config.project_found
    assert config.key_prefix == "viaenv"


def test_a_named_project_folder_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as info:
        load_config(env={"SANDBOXRUNNER_PROJECT": str(missing)})
    assert str(info.value) == (f"environment SANDBOXRUNNER_PROJECT: {missing} "
                               "is not a folder")
    with pytest.raises(ConfigError) as info:
        load_config(project_dir=missing, env={}, names={"project_dir": "--project"})
    assert str(info.value) == f"--project: {missing} is not a folder"


def test_a_given_project_beats_sandboxrunner_project(tmp_path: Path) -> None:
    write_pyproject(tmp_path / "given", "key_prefix = 'given'\n")
    config = load_config(project_dir=tmp_path / "given",
                         env={"SANDBOXRUNNER_PROJECT": str(tmp_path / "nope")})
    assert config.key_prefix == "given"


# --------------------------------------------------------------------------- errors


def test_a_bad_pyproject_value_names_the_file_and_key(tmp_path: Path) -> None:
    path = write_pyproject(tmp_path, 'job_timeout = "abc"\n')
    message = config_error(tmp_path)
    assert message == (f"{path.resolve()} [tool.sandboxrunner] job_timeout: "
                       "expected a positive integer (milliseconds), got 'abc'")


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    message = config_error(tmp_path, env={"SANDBOXRUNNER_LEASE_MS": "soon"})
    assert message == ("environment SANDBOXRUNNER_LEASE_MS: "
                       "expected a positive integer (milliseconds), got 'soon'")


def test_a_bad_override_names_the_init_worker_argument(tmp_path: Path) -> None:
    message = config_error(tmp_path, overrides={"grace_period": 0})
    assert message.startswith("init_worker argument grace_period: expected a positive integer")


def test_a_bad_flag_is_named_as_the_user_wrote_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"workers": "urgent", "concurrency": 0}, project_dir=tmp_path, env={},
                    names={"workers": "--workers", "concurrency": "--concurrency"})
    assert str(info.value) == ("--workers: unknown worker 'urgent'; "
                               "expected some of: default, priority")


def test_an_unknown_pyproject_key_lists_the_valid_ones(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "job_timeout_ms = 5\nfoo = 1\n")
    message = config_error(tmp_path)
    assert "[tool.sandboxrunner]: unknown keys foo, job_timeout_ms" in message
    assert "valid keys: " in message and "job_timeout" in message and "lease_ms" in message
    assert "\n" not in message


def test_a_misspelt_key_gets_a_suggestion(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "job_timout = 5\nconcurency = 3\nfoo = 1\n")
    message = config_error(tmp_path)
    assert ("unknown keys concurency (did you mean concurrency?), foo, "
            "job_timout (did you mean job_timeout?); valid keys: ") in message


def test_an_unknown_init_worker_argument_lists_the_valid_ones(tmp_path: Path) -> None:
    message = config_error(tmp_path, overrides={"timeout": 5, "project_dir": "x"})
    assert ("init_worker: unknown arguments project_dir, timeout (did you mean "
            "job_timeout?); valid arguments: ") in message


def test_a_section_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool]\nsandboxrunner = 3\n")
    assert "[tool.sandboxrunner]: expected a table, got 3" in config_error(tmp_path)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.sandboxrunner\n")
    assert "pyproject.toml: cannot be read as TOML" in config_error(tmp_path)


@pytest.mark.parametrize(
    ("workers", "problem"),
    [
        ("fast", "unknown worker 'fast'; expected some of: default, priority"),
        (["default", "slow"], "unknown worker 'slow'"),
        ("", "no worker given"),
        (" , ", "no worker given; expected some of: default, priority"),
        ([], "no worker given"),
        (5, "expected a list of queue names or a comma-separated string"),
    ],
)
def test_bad_workers_are_errors(tmp_path: Path, workers: Any, problem: str) -> None:
    assert problem in config_error(tmp_path, overrides={"workers": workers})


def test_bad_workers_from_the_environment_name_the_variable(tmp_path: Path) -> None:
    message = config_error(tmp_path, env={"WORKERS": "default,bulk"})
    assert message.startswith("environment WORKERS: unknown worker 'bulk'")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("job_timeout", -1, "a positive integer (milliseconds)"),
        ("result_ttl", 1.5, "a positive integer (milliseconds)"),
        ("heartbeat_ms", True, "a positive integer (milliseconds)"),
        ("max_stalled", -1, "a non-negative integer"),
        ("concurrency", 0, "a positive integer"),
        ("history_size", 0, "a positive integer"),
        ("max_memory_per_child", 0, "a positive integer (MiB)"),
        ("max_data_size", 0, "a positive number of MiB"),
        ("max_data_size", float("inf"), "a positive number of MiB"),
        ("use_separate_process", "maybe", "true or false"),
        ("key_prefix", "", "a non-empty prefix without braces or whitespace"),
        ("key_prefix", "my{app}", "a non-empty prefix without braces or whitespace"),
        ("key_prefix", "my app", "a non-empty prefix without braces or whitespace"),
        ("jobs_dir", "  ", "a directory path"),
        ("child_limits", [1], "a table/JSON object"),
    ],
)
def test_out_of_range_values_are_errors(
    tmp_path: Path, key: str, value: Any, expected: str
) -> None:
    assert f"init_worker argument {key}: expected {expected}" in config_error(
        tmp_path, overrides={key: value})


def test_max_stalled_may_be_zero(tmp_path: Path) -> None:
    assert load(tmp_path, overrides={"max_stalled": 0}).max_stalled == 0


@pytest.mark.parametrize(
    ("var", "text", "expected"),
    [
        ("SANDBOXRUNNER_USE_SEPARATE_PROCESS", "perhaps", "true or false, got 'perhaps'"),
        ("SANDBOXRUNNER_MAX_DATA_SIZE", "big", "a positive number of MiB, got 'big'"),
        ("SANDBOXRUNNER_CHILD_LIMITS", "{cpu: 1}", "a table/JSON object"),
        ("SANDBOXRUNNER_MAX_STALLED", "1.5", "a non-negative integer, got '1.5'"),
        ("SANDBOXRUNNER_ENV", "staging", "'production' or 'development', got 'staging'"),
    ],
)
def test_unparseable_environment_values_are_errors(
    tmp_path: Path, var: str, text: str, expected: str
) -> None:
    message = config_error(tmp_path, env={var: text})
    assert message.startswith(f"environment {var}: expected {expected}")
    assert repr(text) in message


def test_child_limits_keys_and_values_are_checked(tmp_path: Path) -> None:
    message = config_error(tmp_path, overrides={"child_limits": {"threads": 4}})
    assert "init_worker argument child_limits: unknown keys threads" in message
    assert "address_space_mib, cpu_seconds, open_files" in message
    message = config_error(tmp_path, overrides={"child_limits": {"cpu_seconds": -1}})
    assert message.startswith(
        "init_worker argument child_limits.cpu_seconds: expected a positive integer")


def test_a_redis_url_needs_a_known_scheme_and_the_error_hides_its_password(
    tmp_path: Path,
) -> None:
    message = config_error(tmp_path, env={"REDIS_URL": "http://:hunter2@host:6379"})
    assert message.startswith("environment REDIS_URL: expected a URL starting with "
                              "redis://, rediss://, unix://")
    assert "hunter2" not in message and "***" in message
    for url in ("redis://h:1/0", "rediss://h", "unix:///tmp/redis.sock"):
        assert load(tmp_path, overrides={"redis_url": url}).redis_url == url


def test_a_lease_shorter_than_two_heartbeats_is_an_error(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "heartbeat_ms = 6000\n")
    message = config_error(tmp_path)
    assert "lease_ms (10000, from defaults) must be at least twice heartbeat_ms (6000" in message
    assert "pyproject.toml [tool.sandboxrunner] heartbeat_ms" in message


def test_production_set_both_ways_must_agree(tmp_path: Path) -> None:
    message = config_error(tmp_path, env={"SANDBOXRUNNER_ENV": "development",
                                          "SANDBOXRUNNER_PRODUCTION": "true"})
    assert "contradicts environment SANDBOXRUNNER_PRODUCTION" in message


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://alice:s3cret@host:6380", "rediss://alice:***@host:6380"),
        ("redis://s3cret@host", "redis://***@host"),
        ("redis://host:6379/1", "redis://host:6379/1"),
        ("unix:///run/redis.sock?db=2&password=s3cret",
         "unix:///run/redis.sock?db=2&password=***"),
        ("redis://:s3cret@host/0?Password=s3cret#frag", "redis://:***@host/0?Password=***#frag"),
        ("redis://a:p@ss@host", "redis://a:***@host"),
    ],
)
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_config_redacts_its_own_url() -> None:
    assert Config(redis_url="redis://u:pw@h:1").redacted_redis_url() == "redis://u:***@h:1"
    assert Config().redacted_redis_url() is None
