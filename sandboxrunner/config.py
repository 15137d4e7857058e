"""The runtime configuration: one frozen `Config`, built once from four layers.

Precedence, lowest first (a later layer wins key by key):

  1. the defaults below;
  2. ``[tool.sandboxrunner]`` in ``<project_dir>/pyproject.toml`` (see "The project");
  3. the environment: ``REDIS_URL``, ``WORKERS`` (comma-separated),
     ``SANDBOXRUNNER_ENV=production|development`` and ``SANDBOXRUNNER_<KEY>`` for every
     other key below (booleans as 1/true/yes/on or 0/false/no/off, child_limits as JSON);
     an empty variable counts as unset;
  4. ``overrides``: CLI flags and init_worker keyword arguments; None means "not given".
     ``names`` says how the user wrote each (``--workers``), so an error quotes that.

The project (`find_project_dir` is the one place that decides it): the folder named by
``--project`` (the ``project_dir`` argument) or ``SANDBOXRUNNER_PROJECT``, which must exist;
else, as git finds its repository, the nearest of the cwd and its ancestors holding a
``worker_jobs/`` folder or a ``pyproject.toml`` with a ``[tool.sandboxrunner]`` table (a
pyproject.toml without one, say a sub-package's, is walked past). Outside any project the
cwd is used and ``project_found`` is False: nothing is found there, no embedded server is
started there, and `project_hint` says why in the messages that report it.

Keys (all durations are integer milliseconds, all sizes MiB):

  redis_url               None       redis://, rediss://, unix://, redis+cluster:// or
                                     redis+sentinel:// URL (deployment.py); None starts
                                     the embedded server
  jobs_dir                worker_jobs  job files; a relative path is taken from project_dir
  workers                 default,priority  queues this process serves (list or comma string)
  concurrency             None       jobs at once; None is 300 with threads and the CPU
                                     count with separate processes
  job_timeout             30000      time limit of a job that sets no `timeout`
  use_separate_process    false      run each job in a pre-forked child, not a thread
  result_ttl              3600000    how long a settled job's record and result are kept
  lease_ms                10000      silence after which a supervisor's jobs are taken back;
                                     at least twice heartbeat_ms
  heartbeat_ms            1000       how often a supervisor proves it is alive
  max_stalled             1          times a job may be taken back before it fails (>= 0)
  key_prefix              sr         Redis key prefix; no braces or whitespace
  history_size            1000       settled job ids kept per queue for the dashboard
  log_max_lines           1000       ctx.log lines kept per job
  max_data_size           0.5        largest job data accepted (MiB, may be fractional)
  grace_period            30000      on SIGTERM, how long running jobs may finish
  max_jobs_per_child      None       recycle a child after this many jobs
  max_memory_per_child    None       recycle a child whose RSS grew past this (MiB)
  memory_limit_per_child  None       hard memory limit of a child (MiB)
  child_limits            None       {"address_space_mib", "cpu_seconds", "open_files"}
  auto_start              true       start a supervisor in-process when none is running
  auto_start_production   true       ... and do so in production too
  production              false      also set by SANDBOXRUNNER_ENV=production
  wait_replicas           0          replicas that must acknowledge each enqueue and
                                     settlement (WAIT) before it counts as done
  wait_replicas_timeout   1000       how long that WAIT waits; too few replicas: sent again

Every value is validated (the checks are in config_keys.py); a bad one is a `ConfigError`
naming its source (the pyproject file and key, the environment variable, or the override)
and what was expected.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sandboxrunner.config_keys import KEYS, bad
from sandboxrunner.config_keys import redact_url as redact_url  # re-exported
from sandboxrunner.errors import ConfigError
from sandboxrunner.keys import QUEUES

THREAD_CONCURRENCY = 300


@dataclass(frozen=True)
class Config:
    """Settings of one process; build it with `load_config`, never mutate it."""

    redis_url: str | None = None
    jobs_dir: Path = Path("worker_jobs")
    workers: tuple[str, ...] = QUEUES
    concurrency: int | None = None
    job_timeout: int = 30_000
    use_separate_process: bool = False
    result_ttl: int = 3_600_000
    lease_ms: int = 10_000
    heartbeat_ms: int = 1_000
    max_stalled: int = 1
    key_prefix: str = "sr"
    history_size: int = 1000
    log_max_lines: int = 1000
    max_data_size: float = 0.5
    grace_period: int = 30_000
    max_jobs_per_child: int | None = None
    max_memory_per_child: int | None = None
    memory_limit_per_child: int | None = None
    child_limits: dict[str, int] | None = None
    auto_start: bool = True
    auto_start_production: bool = True
    production: bool = False
    wait_replicas: int = 0  # replicas that must acknowledge each enqueue and settlement
    wait_replicas_timeout: int = 1_000
    project_dir: Path = Path(".")
    project_found: bool = True  # False: no project around the cwd, project_dir is the cwd

    def effective_concurrency(self) -> int:
        """How many jobs run at once when `concurrency` is not set."""
        if self.concurrency is not None:
            return self.concurrency
        if self.use_separate_process:
            # One child per core: more would only make CPU-bound jobs contend.
            return os.cpu_count() or 1
        return THREAD_CONCURRENCY

    def redacted_redis_url(self) -> str | None:
        return None if self.redis_url is None else redact_url(self.redis_url)


# Where the configuration was found, so neither can itself be configured.
FOUND_NOT_SET = ("project_dir", "project_found")
assert set(KEYS) == {f.name for f in fields(Config)} - set(FOUND_NOT_SET)

PROJECT_ENV = "SANDBOXRUNNER_PROJECT"
_ENV_NAMES = {"redis_url": "REDIS_URL", "workers": "WORKERS"}

# Each layer maps a key to (validated value, where it came from).
Layer = dict[str, tuple[Any, str]]


def env_var_name(key: str) -> str:
    """The environment variable that sets `key`."""
    return _ENV_NAMES.get(key, f"SANDBOXRUNNER_{key.upper()}")


def _with_suggestion(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f"{name} (did you mean {close[0]}?)" if close else name


def _reject_unknown(keys: Any, where: str, noun: str = "key") -> None:
    unknown = sorted(str(k) for k in keys if k not in KEYS)
    if unknown:
        valid = sorted(KEYS)
        named = ", ".join(_with_suggestion(name, valid) for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"{where}: unknown {noun}{plural} {named}; "
                          f"valid {noun}s: {', '.join(valid)}")


# --------------------------------------------------------------------------- the project


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as TOML: {exc}") from exc


def _is_project(folder: Path) -> bool:
    if (folder / "worker_jobs").is_dir():
        return True
    pyproject = folder / "pyproject.toml"
    return pyproject.is_file() and "sandboxrunner" in _read_toml(pyproject).get("tool", {})


def find_project_dir(start: Path | None = None) -> Path | None:
    """The nearest of `start` (default: the cwd) and its ancestors that holds a
    worker_jobs/ folder or a pyproject.toml with [tool.sandboxrunner], as git finds its
    repository; None when none does."""
    start = (start if start is not None else Path.cwd()).resolve()
    return next((folder for folder in (start, *start.parents) if _is_project(folder)), None)


def _named_project(path: Path | str, where: str) -> Path:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"{where}: {folder} is not a folder")
    return folder


def _locate_project(given: Path | None, given_as: str,
                    env: Mapping[str, str]) -> tuple[Path, bool]:
    """(project folder, whether it was named or found); the cwd when neither."""
    if given is not None:
        return _named_project(given, given_as), True
    named = env.get(PROJECT_ENV, "").strip()
    if named:
        return _named_project(named, f"environment {PROJECT_ENV}"), True
    found = find_project_dir()
    return (found, True) if found is not None else (Path.cwd().resolve(), False)


def project_hint(config: Config) -> str:
    """Why a command outside any project finds nothing, and what to do ('' in one)."""
    if config.project_found:
        return ""
    return (f"no sandboxrunner project found in {config.project_dir} or any folder above it "
            f"(a project has a worker_jobs/ folder or a pyproject.toml with "
            f"[tool.sandboxrunner]); run this in your project, pass --project DIR or set "
            f"{PROJECT_ENV}")


# --------------------------------------------------------------------------- layers


def _pyproject_layer(project_dir: Path) -> Layer:
    path = project_dir / "pyproject.toml"
    if not path.is_file():
        return {}
    section = _read_toml(path).get("tool", {}).get("sandboxrunner", {})
    where = f"{path} [tool.sandboxrunner]"
    if not isinstance(section, dict):
        raise bad(where, "a table", section)
    # [tool.sandboxrunner.dashboard] is the web dashboard's own (dashboard_config.py)
    section = {k: v for k, v in section.items() if k != "dashboard"}
    _reject_unknown(section, where)
    return {k: (KEYS[k].check(v, f"{where} {k}"), f"{where} {k}") for k, v in section.items()}


def _env_layer(env: Mapping[str, str]) -> Layer:
    layer: Layer = {}
    for key, spec in KEYS.items():
        var = env_var_name(key)
        text = env.get(var, "")
        if text.strip():  # `REDIS_URL= cmd` is the shell idiom for "unset"
            where = f"environment {var}"
            layer[key] = (spec.check(spec.from_text(text), where), where)
    mode = env.get("SANDBOXRUNNER_ENV", "").strip().lower()
    if mode:
        where = "environment SANDBOXRUNNER_ENV"
        if mode not in ("production", "development"):
            raise bad(where, "'production' or 'development'", env["SANDBOXRUNNER_ENV"])
        given = layer.get("production")
        if given is not None and given[0] != (mode == "production"):
            raise ConfigError(f"{where}={mode} contradicts {given[1]}; set only one of them")
        layer["production"] = (mode == "production", where)
    return layer


def _override_layer(overrides: Mapping[str, Any], names: Mapping[str, str]) -> Layer:
    given = {k: v for k, v in overrides.items() if v is not None}
    _reject_unknown(given, "init_worker", noun="argument")
    layer: Layer = {}
    for key, value in given.items():
        where = names.get(key) or f"init_worker argument {key}"
        layer[key] = (KEYS[key].check(value, where), where)
    return layer


def _check_consistency(layer: Layer) -> None:
    lease_ms, lease_from = layer["lease_ms"]
    heartbeat_ms, heartbeat_from = layer["heartbeat_ms"]
    # One late heartbeat must not be enough for another host to take the jobs back.
    if lease_ms < 2 * heartbeat_ms:
        raise ConfigError(
            f"lease_ms ({lease_ms}, from {lease_from}) must be at least twice "
            f"heartbeat_ms ({heartbeat_ms}, from {heartbeat_from})"
        )


def load_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    project_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    names: Mapping[str, str] | None = None,
) -> Config:
    """Defaults < pyproject.toml < environment < overrides, validated into a Config.

    NAMES says how the user wrote each override (``{"workers": "--workers"}``, and
    ``"project_dir"`` for PROJECT_DIR), so errors quote it; unnamed ones are init_worker
    arguments."""
    names = names or {}
    env = os.environ if env is None else env
    project_dir, project_found = _locate_project(
        project_dir, names.get("project_dir", "project_dir"), env)
    defaults = Config()
    merged: Layer = {k: (getattr(defaults, k), "defaults") for k in KEYS}
    merged.update(_pyproject_layer(project_dir))
    merged.update(_env_layer(env))
    merged.update(_override_layer(overrides or {}, names))
    _check_consistency(merged)
    values = {k: value for k, (value, _) in merged.items()}
    jobs_dir: Path = values.pop("jobs_dir")
    if not jobs_dir.is_absolute():
        jobs_dir = project_dir / jobs_dir
    return Config(**values, jobs_dir=jobs_dir, project_dir=project_dir,
                  project_found=project_found)
