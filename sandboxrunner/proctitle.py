"""Process titles: what `ps`, `top` and `htop` show for a supervisor and its children.

  sandboxrunner supervisor default,priority (processes) [shop]    `sandboxrunner start`
  sandboxrunner fork server default,priority [shop]                forks its children
  sandboxrunner child default: idle                                a child of its pool
  sandboxrunner child default: running send_email default-3f2a...  ... running a job

Without titles every child shows its supervisor's exact command line, so nobody can tell
the supervisor from its children, nor which child runs what. The supervisor's title is
set by ``sandboxrunner start`` only, before any thread starts (setproctitle rewrites the
memory that held argv and environ); an in-process worker never renames the app's process,
only its fork server and the children, each in its own memory once started.

setproctitle is a dependency rather than an optional extra: titles matter most to the
newcomer looking at `ps`, who would not know to install an extra, and it ships wheels for
Linux and macOS on every Python we support, with no dependencies of its own. Installed
without it (``pip install --no-deps``), titles are left as they are. A title costs about
0.5 us to set (measured); a child sets two per job.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Config

set_title: Callable[[str], None]
try:
    from setproctitle import setproctitle as set_title
except ImportError:  # pragma: no cover - installed without its dependencies
    def set_title(title: str) -> None:
        """Titles are not set without setproctitle."""


def supervisor_title(config: Config) -> str:
    mode = "processes" if config.use_separate_process else "threads"  # Supervisor.mode
    return (f"sandboxrunner supervisor {','.join(config.workers)} ({mode}) "
            f"[{config.project_dir.name}]")


def fork_server_title(config: Config) -> str:
    return f"sandboxrunner fork server {','.join(config.workers)} [{config.project_dir.name}]"


def child_title(queue: str, job_name: str = "", job_id: str = "") -> str:
    if not job_id:
        return f"sandboxrunner child {queue}: idle"
    return f"sandboxrunner child {queue}: running {job_name} {job_id}"
