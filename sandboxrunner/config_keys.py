"""Every configuration key: how its value is checked, and how it is read from the text of
an environment variable. config.py layers the sources; this module knows the values.

A check takes (value, where) and returns the value normalised, or raises `ConfigError`
naming WHERE (the pyproject key, the environment variable or the flag) and what was
expected. Environment text is parsed leniently: text that does not parse is handed to the
check as it is, so the error quotes what the user wrote.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandboxrunner.deployment import SCHEMES, parse_deployment
from sandboxrunner.errors import ConfigError
from sandboxrunner.keys import QUEUES

REDIS_SCHEMES = tuple(f"{scheme}://" for scheme in SCHEMES)  # deployment.py: what each means
CHILD_LIMIT_KEYS = ("address_space_mib", "cpu_seconds", "open_files")
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def redact_url(url: str) -> str:
    """`url` with any password replaced by ``***``, safe to print or log."""
    # Plain string surgery rather than urllib: urlunsplit turns unix:///path into unix:/path.
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority_end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:authority_end], rest[authority_end:]
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        # A lone userinfo (redis://secret@host) was read as the password by redis-py < 4.
        authority = f"{user}:***@{hostport}" if has_password else f"***@{hostport}"
    tail, has_fragment, fragment = tail.partition("#")
    path, has_query, query = tail.partition("?")
    if has_query:
        query = "&".join(
            f"{key}=***" if key.lower().endswith("password") else item
            for item, key in ((item, item.partition("=")[0]) for item in query.split("&"))
        )
    return f"{scheme}://{authority}{path}{has_query}{query}{has_fragment}{fragment}"


# --------------------------------------------------------------------------- value checks


def bad(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `job_timeout = true` is a mistake, not 1 ms.
    return isinstance(value, int) and not isinstance(value, bool)


def _int_at_least(minimum: int, expected: str) -> Callable[[Any, str], int]:
    def check(value: Any, where: str) -> int:
        if not _is_int(value) or value < minimum:
            raise bad(where, expected, value)
        return int(value)

    return check


_duration_ms = _int_at_least(1, "a positive integer (milliseconds)")
_positive_int = _int_at_least(1, "a positive integer")
_mebibytes = _int_at_least(1, "a positive integer (MiB)")


def _check_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise bad(where, "true or false", value)
    return value


def _check_data_size(value: Any, where: str) -> float:
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value) or value <= 0):
        raise bad(where, "a positive number of MiB", value)
    return float(value)


def _check_redis_url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith(REDIS_SCHEMES):
        shown = redact_url(value) if isinstance(value, str) else value
        raise bad(where, f"a URL starting with {', '.join(REDIS_SCHEMES)}", shown)
    try:
        parse_deployment(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}; got {redact_url(value)}") from exc
    return value


def _check_jobs_dir(value: Any, where: str) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise bad(where, "a directory path", value)
    return Path(value).expanduser()


def _check_workers(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise bad(where, "a list of queue names or a comma-separated string", value)
    names = [item.strip() for item in items if item.strip()]
    if not names:
        raise ConfigError(f"{where}: no worker given; expected some of: {', '.join(QUEUES)}")
    unknown = [n for n in names if n not in QUEUES]
    if unknown:
        raise ConfigError(
            f"{where}: unknown worker {', '.join(map(repr, unknown))}; "
            f"expected some of: {', '.join(QUEUES)}"
        )
    return tuple(dict.fromkeys(names))  # drops duplicates, keeps the given order


def _check_key_prefix(value: Any, where: str) -> str:
    # Braces would break the {prefix:queue} hash tag that keeps a queue in one slot.
    if (not isinstance(value, str) or not value
            or any(c in "{}" or c.isspace() for c in value)):
        raise bad(where, "a non-empty prefix without braces or whitespace", value)
    return value


def _check_child_limits(value: Any, where: str) -> dict[str, int]:
    expected = f"a table/JSON object with some of {', '.join(CHILD_LIMIT_KEYS)}"
    if not isinstance(value, Mapping):
        raise bad(where, expected, value)
    unknown = sorted(set(value) - set(CHILD_LIMIT_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)}; expected {expected}")
    for key, limit in value.items():
        _positive_int(limit, f"{where}.{key}")
    return dict(value)


# --------------------------------------------------------------------------- environment text


def _text_int(text: str) -> Any:
    try:
        return int(text.strip())
    except ValueError:
        return text  # left as text so the check reports the original value


def _text_float(text: str) -> Any:
    try:
        return float(text.strip())
    except ValueError:
        return text


def _text_bool(text: str) -> Any:
    word = text.strip().lower()
    if word in _TRUE_WORDS or word in _FALSE_WORDS:
        return word in _TRUE_WORDS
    return text


def _text_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _text_str(text: str) -> Any:
    return text.strip()


@dataclass(frozen=True)
class _Key:
    check: Callable[[Any, str], Any]
    from_text: Callable[[str], Any] = _text_str


KEYS: dict[str, _Key] = {
    "redis_url": _Key(_check_redis_url),
    "jobs_dir": _Key(_check_jobs_dir),
    "workers": _Key(_check_workers),
    "concurrency": _Key(_positive_int, _text_int),
    "job_timeout": _Key(_duration_ms, _text_int),
    "use_separate_process": _Key(_check_bool, _text_bool),
    "result_ttl": _Key(_duration_ms, _text_int),
    "lease_ms": _Key(_duration_ms, _text_int),
    "heartbeat_ms": _Key(_duration_ms, _text_int),
    "max_stalled": _Key(_int_at_least(0, "a non-negative integer"), _text_int),
    "key_prefix": _Key(_check_key_prefix),
    "history_size": _Key(_positive_int, _text_int),
    "log_max_lines": _Key(_positive_int, _text_int),
    "max_data_size": _Key(_check_data_size, _text_float),
    "grace_period": _Key(_duration_ms, _text_int),
    "max_jobs_per_child": _Key(_positive_int, _text_int),
    "max_memory_per_child": _Key(_mebibytes, _text_int),
    "memory_limit_per_child": _Key(_mebibytes, _text_int),
    "child_limits": _Key(_check_child_limits, _text_json),
    "auto_start": _Key(_check_bool, _text_bool),
    "auto_start_production": _Key(_check_bool, _text_bool),
    "production": _Key(_check_bool, _text_bool),
    "wait_replicas": _Key(_int_at_least(0, "a non-negative integer"), _text_int),
    "wait_replicas_timeout": _Key(_duration_ms, _text_int),
}
# project_dir is where the configuration was found, so it cannot itself be configured.
