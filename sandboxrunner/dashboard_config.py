"""The web dashboard's settings: ``[tool.sandboxrunner.dashboard]`` in the project's
pyproject.toml, then the environment. Core code (no web imports): `integrations.lifespan`
reads it to mount the dashboard, and `sandboxrunner dashboard` (cli_dashboard.py) to
serve it.

  route      None     where integrations.lifespan mounts the dashboard in a Starlette or
                      FastAPI app ("/admin/queues"); unset: it mounts nothing
  read_only  true     no actions (every POST is 403)
  user       None     basic-auth user of the standalone server (SANDBOXRUNNER_DASHBOARD_USER)
  password   None     its password (SANDBOXRUNNER_DASHBOARD_PASSWORD; keep it out of
                      pyproject.toml, which is usually committed)

A bad value or an unknown key is a `ConfigError` naming the file and key.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

TABLE = "[tool.sandboxrunner.dashboard]"
USER_ENV = "SANDBOXRUNNER_DASHBOARD_USER"
PASSWORD_ENV = "SANDBOXRUNNER_DASHBOARD_PASSWORD"
KEYS = ("route", "read_only", "user", "password")


@dataclass(frozen=True)
class DashboardConfig:
    route: str | None = None
    read_only: bool = True
    user: str | None = None
    password: str | None = None

    def basic_auth(self) -> tuple[str, str] | None:
        """(user, password) when both are set, else None."""
        return (self.user, self.password) if self.user and self.password else None


def load_dashboard_config(project_dir: Path,
                          env: Mapping[str, str] | None = None) -> DashboardConfig:
    env = os.environ if env is None else env
    path = project_dir / "pyproject.toml"
    table: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read as TOML: {exc}") from exc
        table = data.get("tool", {}).get("sandboxrunner", {}).get("dashboard", {})
    where = f"{path} {TABLE}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    _reject_unknown(table, where)
    values = {key: _checked(key, value, f"{where} {key}") for key, value in table.items()}
    for key, var in (("user", USER_ENV), ("password", PASSWORD_ENV)):
        if env.get(var, "").strip():
            values[key] = env[var].strip()
    return DashboardConfig(**values)


def _reject_unknown(table: Mapping[str, Any], where: str) -> None:
    for key in table:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key}{hint}; valid keys: "
                              f"{', '.join(KEYS)}")


def _checked(key: str, value: Any, where: str) -> Any:
    if key == "read_only":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected text, got {value!r}")
    if key == "route" and (not value.startswith("/") or value == "/"):
        raise ConfigError(f"{where}: expected a path starting with / such as "
                          f"'/admin/queues', got {value!r}")
    return value.rstrip("/") if key == "route" else value
