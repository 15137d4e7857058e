"""Job definitions: discovery, import and validation of every job sandboxrunner can run.

This module owns the answer to "which jobs exist and how is each one called". Jobs come
from three places, merged by `load_registry`:

  job files      every ``*.py`` directly in the jobs directory (``worker_jobs/`` by
                 default) whose name starts with neither ``_`` nor ``.``; the job is named
                 after the file stem. Module attributes: ``run`` (required), ``cron``,
                 ``worker``, ``singleton``, ``timeout``, ``retries``, ``backoff``.
  register_job   programmatic registration, kept in a module-level dict.
  plugins        entry points in the group ``sandboxrunner.jobs``; each loads to a mapping
                 ``{job_name: module | dict}`` (dict keys: ``handler`` plus the attributes
                 above without ``run``).

All three go through `make_spec`, so a job is validated the same way wherever it comes
from. Every problem is a `JobLoadError` naming the job, its source and what is wrong.

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
import inspect
import json
import os
import re
import sys
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from sandboxrunner.errors import JobLoadError, UnknownJob
from sandboxrunner.keys import QUEUES

PACKAGE = "sandboxrunner_jobs"
PLUGIN_GROUP = "sandboxrunner.jobs"
REGISTER_JOB_SOURCE = "register_job"

# Job names end up inside Redis keys separated by ':' and hash-tagged with '{}', so those
# characters (and '.', which would make the module name look like a subpackage) are out.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_CRON_KEYS = frozenset({"pattern", "data", "tz"})
_BACKOFF_KEYS = frozenset({"type", "delay"})
_BACKOFF_TYPES = ("fixed", "exponential")
_PLUGIN_DICT_KEYS = frozenset(
    {"handler", "cron", "worker", "singleton", "timeout", "retries", "backoff"}
)

Singleton = bool | Callable[[Any], Any] | None


@dataclass(frozen=True)
class CronSpec:
    """A validated schedule: a 5-field pattern, or 6 fields with seconds last."""

    pattern: str
    data: Any = None
    tz: str = "UTC"


@dataclass(frozen=True)
class JobSpec:
    """One validated job: its handler and how the runner must treat it."""

    name: str
    handler: Callable[..., Any]
    queue: str
    is_async: bool
    arity: int
    cron: CronSpec | None
    singleton: Singleton
    timeout_ms: int | None
    retries: int
    backoff: dict[str, Any] | None
    source: str
    module_name: str | None

    def call(self, data: Any, ctx: Any) -> Any:
        """Call the handler with as many arguments as it takes (a coroutine if async)."""
        if self.arity == 0:
            return self.handler()
        if self.arity == 1:
            return self.handler(data)
        return self.handler(data, ctx)


class Registry:
    """The jobs known to this process, by name."""

    def __init__(self, jobs: dict[str, JobSpec]) -> None:
        self.jobs = jobs

    def get(self, name: str) -> JobSpec:
        try:
            return self.jobs[name]
        except KeyError:
            raise UnknownJob(name, list(self.jobs)) from None

    def names(self) -> list[str]:
        return sorted(self.jobs)

    def for_queue(self, queue: str) -> list[JobSpec]:
        """Jobs served by `queue`, in name order."""
        if queue not in QUEUES:
            raise ValueError(f"unknown queue {queue!r}; expected one of: {', '.join(QUEUES)}")
        return [self.jobs[n] for n in self.names() if self.jobs[n].queue == queue]


_REGISTERED: dict[str, JobSpec] = {}


# --------------------------------------------------------------------------- validation


def _where(name: str, source: str) -> str:
    if os.path.isabs(source):
        return f"job {name!r} (file {source})"
    return f"job {name!r} ({source})"


def _fail(name: str, source: str, problem: str) -> JobLoadError:
    return JobLoadError(f"{_where(name, source)}: {problem}")


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `timeout = True` is a mistake, not one millisecond.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_cron_pattern(pattern: Any) -> str | None:
    """The problem with `pattern`, or None when croniter accepts it and it ever fires."""
    if not isinstance(pattern, str):
        return f"cron pattern must be a string, got {pattern!r}"
    fields = pattern.split()
    if len(fields) not in (5, 6):
        return (
            f"cron pattern {pattern!r} has {len(fields)} fields; expected 5 "
            "(minute hour day month weekday) or 6 (the same plus seconds last)"
        )
    try:
        # get_next catches patterns croniter parses but that never fire, like Feb 31st.
        croniter(pattern, datetime.now(UTC)).get_next(datetime)
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        return f"invalid cron pattern {pattern!r}: {exc}"
    return None


def _check_cron_tz(tz: Any) -> str | None:
    if not isinstance(tz, str):
        return f"cron tz must be a string such as 'UTC' or 'Europe/Paris', got {tz!r}"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown cron tz {tz!r}; expected an IANA zone such as 'UTC' or 'Europe/Paris'"
    return None


def _check_cron_data(data: Any) -> str | None:
    try:
        # allow_nan=False: NaN and Infinity are not JSON, other readers would choke on them.
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"cron data is not JSON-serialisable ({exc}): {data!r}"
    return None


def _validate_cron(name: str, source: str, cron: Any) -> CronSpec | None:
    if cron is None:
        return None
    if isinstance(cron, CronSpec):
        cron = {"pattern": cron.pattern, "data": cron.data, "tz": cron.tz}
    elif isinstance(cron, str):
        cron = {"pattern": cron}
    if not isinstance(cron, Mapping):
        raise _fail(name, source, f"cron must be a pattern string or a dict, got {cron!r}")
    unknown = sorted(map(str, set(cron) - _CRON_KEYS))
    if unknown:
        raise _fail(name, source, f"cron has unknown keys {unknown}; allowed: data, pattern, tz")
    if "pattern" not in cron:
        raise _fail(name, source, "cron dict has no 'pattern' key")
    spec = CronSpec(pattern=cron["pattern"], data=cron.get("data"), tz=cron.get("tz", "UTC"))
    for problem in (
        _check_cron_pattern(spec.pattern),
        _check_cron_tz(spec.tz),
        _check_cron_data(spec.data),
    ):
        if problem:
            raise _fail(name, source, problem)
    return spec


def _check_backoff(backoff: Any) -> str | None:
    if not isinstance(backoff, Mapping):
        return f"backoff must be a delay in ms or a dict with type and delay, got {backoff!r}"
    if set(backoff) != _BACKOFF_KEYS:
        keys = sorted(map(str, backoff))
        return f"backoff must have exactly the keys 'type' and 'delay', got {keys}"
    if backoff["type"] not in _BACKOFF_TYPES:
        return (f"backoff type {backoff['type']!r} is unknown; "
                f"expected one of: {', '.join(_BACKOFF_TYPES)}")
    if not _is_int(backoff["delay"]) or backoff["delay"] < 0:
        return ("backoff delay must be a non-negative integer (milliseconds), "
                f"got {backoff['delay']!r}")
    return None


def _validate_backoff(name: str, source: str, backoff: Any) -> dict[str, Any] | None:
    if backoff is None:
        return None
    if _is_int(backoff):
        backoff = {"type": "fixed", "delay": backoff}
    problem = _check_backoff(backoff)
    if problem:
        raise _fail(name, source, problem)
    return {"type": backoff["type"], "delay": backoff["delay"]}  # a copy the caller can't mutate


def _check_scalars(worker: Any, timeout: Any, retries: Any) -> str | None:
    if not isinstance(worker, str) or worker not in QUEUES:
        return f"unknown worker {worker!r}; expected one of: {', '.join(QUEUES)}"
    if timeout is not None and (not _is_int(timeout) or timeout <= 0):
        return f"timeout must be a positive integer (milliseconds), got {timeout!r}"
    if not _is_int(retries) or retries < 0:
        return f"retries must be a non-negative integer, got {retries!r}"
    return None


def _validate_singleton(name: str, source: str, singleton: Any) -> Singleton:
    if singleton is None or singleton is False:
        return None
    if singleton is True:
        return True
    if callable(singleton):
        key_fn: Callable[[Any], Any] = singleton
        return key_fn
    raise _fail(name, source, "singleton must be True, False, None or a key function "
                f"taking the job data, got {singleton!r}")


def _handler_arity(name: str, source: str, handler: Any) -> int:
    """How many positional arguments (data, ctx) to pass to `handler`."""
    if not callable(handler):
        raise _fail(name, source, f"handler 'run' is not callable, got {handler!r}")
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError) as exc:
        raise _fail(name, source, f"cannot read the signature of the handler: {exc}") from exc
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    empty = inspect.Parameter.empty
    required = [p for p in params if p.kind in positional and p.default is empty]
    kw_required = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is empty]
    if len(required) > 2 or kw_required:
        raise _fail(name, source, "handler must accept (data, ctx), (data) or (); it requires "
                    f"{[p.name for p in required] + kw_required}")
    # Optional positionals count too: `run(data, ctx=None)` wants ctx when there is one.
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return min(2, sum(1 for p in params if p.kind in positional))


def make_spec(
    name: str,
    handler: Any,
    *,
    cron: Any = None,
    worker: Any = "default",
    singleton: Any = None,
    timeout: Any = None,
    retries: Any = 0,
    backoff: Any = None,
    source: str,
    module_name: str | None = None,
) -> JobSpec:
    """Validate one job definition, wherever it came from, into a JobSpec."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise JobLoadError(
            f"job name {name!r} ({source}) is invalid: use letters, digits, '_' and '-' only"
        )
    arity = _handler_arity(name, source, handler)
    problem = _check_scalars(worker, timeout, retries)
    if problem:
        raise _fail(name, source, problem)
    return JobSpec(
        name=name,
        handler=handler,
        queue=worker,
        is_async=inspect.iscoroutinefunction(handler),
        arity=arity,
        cron=_validate_cron(name, source, cron),
        singleton=_validate_singleton(name, source, singleton),
        timeout_ms=timeout,
        retries=retries,
        backoff=_validate_backoff(name, source, backoff),
        source=source,
        module_name=module_name,
    )


def spec_from_module(name: str, module: types.ModuleType, source: str) -> JobSpec:
    """A JobSpec from a module's attributes (job files and plugin modules)."""
    if not hasattr(module, "run"):
        raise _fail(name, source, "module defines no function 'run'")
    return make_spec(
        name,
        module.run,
        cron=getattr(module, "cron", None),
        worker=getattr(module, "worker", "default"),
        singleton=getattr(module, "singleton", None),
        timeout=getattr(module, "timeout", None),
        retries=getattr(module, "retries", 0),
        backoff=getattr(module, "backoff", None),
        source=source,
        module_name=module.__name__,
    )


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
) -> JobSpec:
    """Register a job from code; `load_registry` merges it in. Re-registering replaces."""
    spec = make_spec(
        name, handler, cron=cron, worker=worker, singleton=singleton, timeout=timeout,
        retries=retries, backoff=backoff, source=REGISTER_JOB_SOURCE,
    )
    _REGISTERED[name] = spec
    return spec


def describe(spec: JobSpec) -> dict[str, Any]:
    """One row of the `jobs` CLI table."""
    if spec.singleton is True:
        singleton = "global"
    elif spec.singleton is None:
        singleton = None
    else:
        singleton = "keyed"
    return {
        "name": spec.name,
        "queue": spec.queue,
        "cron": spec.cron.pattern if spec.cron else None,
        "singleton": singleton,
        "timeout_ms": spec.timeout_ms,
        "source": spec.source,
    }


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
    if not _NAME_RE.match(name):
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
    """Every job file in `jobs_dir`; a missing directory holds no jobs."""
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


def _plugin_job(ep_name: str, job_name: Any, value: Any) -> JobSpec:
    source = f"plugin:{ep_name}"
    if isinstance(value, types.ModuleType):
        return spec_from_module(job_name, value, source)
    if not isinstance(value, Mapping):
        raise JobLoadError(
            f"plugin entry point {ep_name!r}: job {job_name!r} must be a module or a dict, "
            f"got {type(value).__name__}"
        )
    unknown = sorted(set(value) - _PLUGIN_DICT_KEYS)
    if unknown or "handler" not in value:
        raise JobLoadError(
            f"plugin entry point {ep_name!r}: job {job_name!r} needs a 'handler' key and "
            f"allows only {sorted(_PLUGIN_DICT_KEYS)}; unknown keys: {unknown}"
        )
    options = {k: v for k, v in value.items() if k != "handler"}
    return make_spec(job_name, value["handler"], source=source, **options)


def _load_plugin(ep: importlib.metadata.EntryPoint) -> list[JobSpec]:
    try:
        jobs = ep.load()
    except Exception as exc:
        raise JobLoadError(
            f"plugin entry point {ep.name!r} ({ep.value}) failed to load with "
            f"{type(exc).__name__}: {exc}\n{_format_import_error(exc)}"
        ) from exc
    if not isinstance(jobs, Mapping):
        raise JobLoadError(
            f"plugin entry point {ep.name!r} ({ep.value}) must load to a mapping "
            f"{{job_name: module or dict}}, got {type(jobs).__name__}"
        )
    return [_plugin_job(ep.name, job_name, value) for job_name, value in jobs.items()]


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


def load_registry(jobs_dir: Path, *, include_plugins: bool = True) -> Registry:
    """All jobs: files in `jobs_dir`, then register_job, then plugins; names must be unique."""
    jobs = load_file_jobs(jobs_dir)
    _merge(jobs, list(_REGISTERED.values()))
    if include_plugins:
        _merge(jobs, load_plugin_jobs())
    return Registry(jobs)
