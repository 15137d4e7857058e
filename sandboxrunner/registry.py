"""Job definitions: discovery, import and lookup of every job sandboxrunner can run.

This module owns the answer to "which jobs exist" (`sandboxrunner.jobspec` owns "how is
each one called"). Jobs come from three places, merged by `load_registry`:

  job files      every ``*.py`` directly in the jobs directory (``worker_jobs/`` by
                 default) whose name starts with neither ``_`` nor ``.``; the job is named
                 after the file stem. Module attributes: ``run`` (required), ``cron``,
                 ``worker``, ``singleton``, ``timeout``, ``retries``, ``backoff``,
                 ``rate_limit``.
  register_job   programmatic registration, kept in a module-level dict.
  plugins        entry points in the group ``sandboxrunner.jobs``; each loads to a mapping
                 ``{job_name: module | dict}`` (dict keys: ``handler`` plus the attributes
                 above without ``run``). Their source reads ``plugin:<entry point> from
                 <distribution> <version>``: the installed package that declared it.

A missing jobs folder is an error (`JobLoadError`, "No jobs found: ...", naming the folder)
unless register_job or plugins give jobs: then it is a warning. An app may keep all its jobs
in plugins or code, but a supervisor started from the wrong directory, or with a mistyped
``--jobs-dir``, must not start serving nothing (it would fail every job it claims as unknown).
An existing folder with no job files is not an error (`sandboxrunner jobs` says so).

All three go through `make_spec` (in `sandboxrunner.jobspec`, which owns validation and
the `JobSpec`/`CronSpec` types; they are re-exported here), so a job is validated the same
way wherever it comes from. Every problem is a `JobLoadError` naming the job, its source
and what is wrong.

Job files are imported as real modules named ``sandboxrunner_jobs.<stem>`` under a
synthetic package ``sandboxrunner_jobs`` whose ``__path__`` is the jobs directory. That
makes handlers picklable by reference in a forked child and lets job files share code
with ``from sandboxrunner_jobs import _helpers``.

Re-loading policy: a file already imported from the same path is reused, never executed
twice. Every registry in a process (the client's, an in-process supervisor's) then holds
the very functions that ``sys.modules`` holds, so they pickle by reference and module
state (locks, pools) exists once. The price is Python's usual one: editing a job file
needs a restart. Loading from another directory drops every ``sandboxrunner_jobs.*``
module first, so two directories holding files of the same name never see each other's
modules; one jobs directory is live per process.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import sys
import traceback
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sandboxrunner.config import Config, project_hint
from sandboxrunner.errors import ConfigError, JobLoadError, UnknownJob
from sandboxrunner.jobspec import JOB_NAME_RE

# Re-exported (the `as` form marks it for mypy): callers and tests import them from here.
from sandboxrunner.jobspec import CronSpec as CronSpec
from sandboxrunner.jobspec import JobSpec as JobSpec
from sandboxrunner.jobspec import RateLimit as RateLimit
from sandboxrunner.jobspec import Singleton as Singleton
from sandboxrunner.jobspec import describe as describe
from sandboxrunner.jobspec import make_spec as make_spec
from sandboxrunner.jobspec import spec_from_module as spec_from_module
from sandboxrunner.keys import QUEUES

log = logging.getLogger(__name__)

PACKAGE = "sandboxrunner_jobs"
PLUGIN_GROUP = "sandboxrunner.jobs"
REGISTER_JOB_SOURCE = "register_job"

_PLUGIN_DICT_KEYS = frozenset(
    {"handler", "cron", "worker", "singleton", "timeout", "retries", "backoff", "rate_limit"}
)


class Registry:
    """The jobs known to this process, by name."""

    def __init__(self, jobs: dict[str, JobSpec], jobs_dir: Path | None = None) -> None:
        self.jobs = jobs
        self.jobs_dir = jobs_dir  # where job files were looked for, for UnknownJob

    def get(self, name: str) -> JobSpec:
        try:
            return self.jobs[name]
        except KeyError:
            raise UnknownJob(name, list(self.jobs), self.jobs_dir) from None

    def names(self) -> list[str]:
        return sorted(self.jobs)

    def for_queue(self, queue: str) -> list[JobSpec]:
        """Jobs served by `queue`, in name order."""
        if queue not in QUEUES:
            raise ValueError(f"unknown queue {queue!r}; expected one of: {', '.join(QUEUES)}")
        return [self.jobs[n] for n in self.names() if self.jobs[n].queue == queue]

    def rate_limits(self, queue: str) -> list[tuple[str, int, int]]:
        """(name, count, period ms) of each rate-limited job served by QUEUE."""
        return [(s.name, s.rate_limit.count, s.rate_limit.period_ms)
                for s in self.for_queue(queue) if s.rate_limit]


_REGISTERED: dict[str, JobSpec] = {}


def register_job(
    name: str,
    handler: Callable[..., Any],
    *,
    cron: Any = None,
    worker: str = "default",
    singleton: Singleton = None,
    timeout: int | None = None,
    retries: int = 0,
    backoff: Any = None,
    rate_limit: str | None = None,
) -> JobSpec:
    """Register a job from code; `load_registry` merges it in. Re-registering replaces."""
    spec = make_spec(
        name, handler, cron=cron, worker=worker, singleton=singleton, timeout=timeout,
        retries=retries, backoff=backoff, rate_limit=rate_limit, source=REGISTER_JOB_SOURCE,
    )
    _REGISTERED[name] = spec
    return spec


# --------------------------------------------------------------------------- job files


def _ensure_package(jobs_dir: Path) -> None:
    """Make `sandboxrunner_jobs` a package over `jobs_dir`, dropping another dir's modules."""
    package = sys.modules.get(PACKAGE)
    if package is not None and list(getattr(package, "__path__", [])) == [str(jobs_dir)]:
        return
    for mod_name in [m for m in sys.modules if m.startswith(PACKAGE + ".")]:
        del sys.modules[mod_name]
    # A fresh package object: the old one still carries the old submodules as attributes,
    # and `from sandboxrunner_jobs import x` would find them there without importing.
    spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(jobs_dir)]
    package = importlib.util.module_from_spec(spec)
    package.__path__ = [str(jobs_dir)]
    sys.modules[PACKAGE] = package


def _format_import_error(exc: BaseException) -> str:
    """The traceback of `exc` without importlib's own frames, which only add noise."""
    tbe = traceback.TracebackException.from_exception(exc)
    tbe.stack = traceback.StackSummary.from_list(
        [f for f in tbe.stack if not f.filename.startswith("<frozen importlib")]
    )
    return "".join(tbe.format())


def _exec_job_module(path: Path, module_name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise JobLoadError(f"job file {path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before exec, as the import system does, so that the module can refer to
    # itself and its functions pickle by reference.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise JobLoadError(
            f"job file {path}: syntax error at line {exc.lineno}: {exc.msg}\n"
            f"{_format_import_error(exc)}"
        ) from exc
    except (Exception, SystemExit) as exc:  # SystemExit: a stray sys.exit() at import
        del sys.modules[module_name]
        raise JobLoadError(
            f"job file {path}: import failed with {type(exc).__name__}: {exc}\n"
            f"{_format_import_error(exc)}"
        ) from exc
    # As the import system does for submodules, so `sandboxrunner_jobs.<stem>` resolves.
    setattr(sys.modules[PACKAGE], module_name.rpartition(".")[2], module)
    return module


def load_job_file(path: Path) -> JobSpec:
    """Import one job file as `sandboxrunner_jobs.<stem>` (once per path) and validate it."""
    path = Path(path).resolve()
    name = path.stem
    if not JOB_NAME_RE.match(name):
        raise JobLoadError(
            f"job file {path}: name {name!r} is invalid: use letters, digits, '_' and '-' only"
        )
    _ensure_package(path.parent)
    module_name = f"{PACKAGE}.{name}"
    module = sys.modules.get(module_name)
    # Also reuses a job module that another job file imported earlier in this load.
    if module is None or getattr(module, "__file__", None) != str(path):
        module = _exec_job_module(path, module_name)
    return spec_from_module(name, module, str(path))


def _job_files(jobs_dir: Path) -> list[Path]:
    # '_' marks helpers; '.' catches editor droppings such as emacs' '.#job.py' locks.
    return sorted(
        p for p in jobs_dir.glob("*.py")
        if p.is_file() and not p.name.startswith(("_", "."))
    )


def load_file_jobs(jobs_dir: Path) -> dict[str, JobSpec]:
    """Every job file in `jobs_dir`; a missing directory holds none (`load_registry` decides
    whether that is an error)."""
    jobs_dir = Path(jobs_dir).resolve()
    if not jobs_dir.exists():
        return {}
    if not jobs_dir.is_dir():
        raise JobLoadError(f"jobs directory {jobs_dir} exists but is not a directory")
    _ensure_package(jobs_dir)
    # The finder's cached listing of the folder may predate helpers written since.
    importlib.invalidate_caches()
    specs = [load_job_file(p) for p in _job_files(jobs_dir)]
    return {s.name: s for s in specs}


# --------------------------------------------------------------------------- plugins


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    """' from DIST VERSION': the installed distribution that declared EP, when known."""
    dist = ep.dist
    return f" from {dist.name} {dist.version}" if dist is not None else ""


def _plugin_job(source: str, job_name: Any, value: Any) -> JobSpec:
    if isinstance(value, types.ModuleType):
        return spec_from_module(job_name, value, source)
    if not isinstance(value, Mapping):
        raise JobLoadError(
            f"{source}: job {job_name!r} must be a module or a dict, got {type(value).__name__}"
        )
    unknown = sorted(set(value) - _PLUGIN_DICT_KEYS)
    if unknown or "handler" not in value:
        raise JobLoadError(
            f"{source}: job {job_name!r} needs a 'handler' key and allows only "
            f"{sorted(_PLUGIN_DICT_KEYS)}; unknown keys: {unknown}"
        )
    options = {k: v for k, v in value.items() if k != "handler"}
    return make_spec(job_name, value["handler"], source=source, **options)


def _load_plugin(ep: importlib.metadata.EntryPoint) -> list[JobSpec]:
    # The source names the entry point and the distribution that declared it, so a clash
    # or a broken plugin says which installed package to look at.
    source = f"plugin:{ep.name}{_distribution(ep)}"
    try:
        jobs = ep.load()
    except Exception as exc:
        raise JobLoadError(
            f"{source}: entry point {ep.name!r} ({ep.value}) failed to load with "
            f"{type(exc).__name__}: {exc}\n{_format_import_error(exc)}"
        ) from exc
    if not isinstance(jobs, Mapping):
        raise JobLoadError(
            f"{source}: entry point {ep.name!r} ({ep.value}) must load to a mapping "
            f"{{job_name: module or dict}}, got {type(jobs).__name__}"
        )
    return [_plugin_job(source, job_name, value) for job_name, value in jobs.items()]


def load_plugin_jobs() -> list[JobSpec]:
    """Every job declared by installed packages in the `sandboxrunner.jobs` group."""
    specs: list[JobSpec] = []
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        specs.extend(_load_plugin(ep))
    return specs


# --------------------------------------------------------------------------- registry


def _merge(jobs: dict[str, JobSpec], extra: list[JobSpec]) -> None:
    for spec in extra:
        other = jobs.get(spec.name)
        if other is not None:
            raise JobLoadError(
                f"job name {spec.name!r} is defined twice: by {other.source} and by "
                f"{spec.source}; rename one of them"
            )
        jobs[spec.name] = spec


def _check_missing_folder(jobs_dir: Path, other_jobs: int, no_project: str) -> None:
    """A missing jobs folder with no job from anywhere else is a mistake (a typo, or the
    wrong directory); with jobs from register_job or plugins it is only worth a warning.
    NO_PROJECT: why no project was found around the cwd ('' if one was): the root cause,
    so it is what the error says."""
    if other_jobs:
        log.warning("jobs folder %s does not exist; serving only the %d job(s) from "
                    "register_job and plugins", jobs_dir, other_jobs)
        return
    if no_project:
        raise ConfigError(f"No jobs found: jobs folder {jobs_dir} does not exist, and "
                          f"{no_project}")
    raise JobLoadError(
        f"No jobs found: jobs folder {jobs_dir} does not exist, and no job comes from "
        "register_job or a plugin; run from your project's folder, or point jobs_dir at your "
        "job files (--jobs-dir, SANDBOXRUNNER_JOBS_DIR, or jobs_dir in [tool.sandboxrunner])"
    )


def load_project_registry(config: Config) -> Registry:
    """The jobs of CONFIG's project; outside any project, a missing jobs folder with no
    other jobs is the `ConfigError` that says no project was found."""
    return load_registry(config.jobs_dir, no_project=project_hint(config))


def load_registry(jobs_dir: Path, *, include_plugins: bool = True,
                  no_project: str = "") -> Registry:
    """All jobs: files in `jobs_dir`, then register_job, then plugins; names must be unique.
    A missing `jobs_dir` is a `JobLoadError` unless register_job or plugins give jobs."""
    jobs_dir = Path(jobs_dir).resolve()
    jobs = load_file_jobs(jobs_dir)
    _merge(jobs, list(_REGISTERED.values()))
    if include_plugins:
        _merge(jobs, load_plugin_jobs())
    if not jobs_dir.exists():
        _check_missing_folder(jobs_dir, len(jobs), no_project)
    return Registry(jobs, Path(jobs_dir).resolve())
