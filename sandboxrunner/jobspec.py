"""Job specs: validating one job definition, wherever it came from, into a JobSpec.

This module owns the answer to "how is this job called and how must the runner treat it".
`make_spec` checks a handler and its options (``cron``, ``worker``, ``singleton``,
``timeout``, ``retries``, ``backoff``, ``rate_limit``) and returns a frozen `JobSpec`;
`spec_from_module` reads those options from a module's attributes (job files and plugin
modules). Every problem is a `JobLoadError` naming the job, its source and what is wrong.
A six-field cron pattern that looks written seconds first is accepted (croniter reads it)
but logged as a warning at load (see cron_text.py).

Finding and importing the definitions, and merging them into a `Registry`, is
`sandboxrunner.registry`'s job; this module imports nothing from it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from sandboxrunner.cron_text import seconds_first_warning
from sandboxrunner.errors import JobLoadError
from sandboxrunner.keys import QUEUES

log = logging.getLogger(__name__)

# Job names end up inside Redis keys separated by ':' and hash-tagged with '{}', so those
# characters (and '.', which would make the module name look like a subpackage) are out.
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_CRON_KEYS = frozenset({"pattern", "data", "tz"})
_BACKOFF_KEYS = frozenset({"type", "delay"})
_BACKOFF_TYPES = ("fixed", "exponential")
RATE_LIMIT_RE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
_RATE_PERIOD_MS = {"s": 1000, "m": 60_000, "h": 3_600_000}

Singleton = bool | Callable[[Any], Any] | None


@dataclass(frozen=True)
class CronSpec:
    """A validated schedule: a 5-field pattern, or 6 fields with seconds last."""

    pattern: str
    data: Any = None
    tz: str = "UTC"


@dataclass(frozen=True)
class RateLimit:
    """At most COUNT claims of a job in any PERIOD_MS, across every supervisor."""

    count: int
    period_ms: int

    def __str__(self) -> str:
        """As a job file writes it: ``100/m``."""
        unit = {ms: unit for unit, ms in _RATE_PERIOD_MS.items()}[self.period_ms]
        return f"{self.count}/{unit}"


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
    rate_limit: RateLimit | None = None

    def call(self, data: Any, ctx: Any) -> Any:
        """Call the handler with as many arguments as it takes (a coroutine if async)."""
        if self.arity == 0:
            return self.handler()
        if self.arity == 1:
            return self.handler(data)
        return self.handler(data, ctx)


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
    warning = seconds_first_warning(spec.pattern)
    if warning:
        log.warning("%s: %s", _where(name, source), warning)
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


def _validate_rate_limit(name: str, source: str, rate_limit: Any) -> RateLimit | None:
    """``"100/m"`` (also ``/s``, ``/h``) as a RateLimit; None means no limit."""
    if rate_limit is None:
        return None
    shape = RATE_LIMIT_RE.match(rate_limit) if isinstance(rate_limit, str) else None
    if not shape or int(shape[1]) <= 0:
        raise _fail(name, source, f"rate_limit must be a count above 0 per second, minute "
                    f"or hour, like '100/m', '5/s' or '1000/h'; got {rate_limit!r}")
    return RateLimit(int(shape[1]), _RATE_PERIOD_MS[shape[2]])


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
    rate_limit: Any = None,
    source: str,
    module_name: str | None = None,
) -> JobSpec:
    """Validate one job definition, wherever it came from, into a JobSpec."""
    if not isinstance(name, str) or not JOB_NAME_RE.match(name):
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
        rate_limit=_validate_rate_limit(name, source, rate_limit),
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
        rate_limit=getattr(module, "rate_limit", None),
        source=source,
        module_name=module.__name__,
    )


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
        "retries": spec.retries,
        "rate_limit": str(spec.rate_limit) if spec.rate_limit else None,
        "source": spec.source,
    }
