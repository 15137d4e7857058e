"""`sandboxrunner top`: the terminal dashboard. Renders one `Snapshot`; never writes.

Three ways to run it (the data and its JSON shape are documented in ``snapshot.py``):

  top            full screen (rich Live on the alternate screen), one snapshot a second;
                 ``q`` or Ctrl-C quits. Keys are read from stdin in cbreak mode with a
                 select() in the refresh loop; the terminal is restored on any exit. When
                 Redis is unreachable the screen says so and keeps retrying.
  top --once     prints one snapshot rendered at the terminal's width (``--width N`` forces
                 it) and exits; plain text when stdout is not a terminal.
  top --json     prints one snapshot as JSON and exits.

With ``--once``/``--json`` an unreachable Redis raises `RedisUnavailable`, and one that
refuses (an ACL, a Cluster node...) a `RedisRefused` (the CLI prints it, address without
password, and exits with EXIT_REDIS).

Which Redis: the configured URL (REDIS_URL, ``--redis-url``, pyproject); without one, the
project's embedded server if it runs. `top` never starts the embedded server: a dashboard
that starts an empty server would show a healthy, idle system that isn't the real one.

What is drawn, and how it narrows on a small terminal, is in top_render.py.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from .config import Config
from .errors import RedisRefused, RedisUnavailable
from .snapshot import Snapshot, SnapshotReader
from .top_render import render


def resolve_url(config: Config) -> str:
    """The Redis URL to watch: configured, else the running embedded server; never starts one."""
    if config.redis_url:
        return config.redis_url
    from .embedded import embedded_status

    status = embedded_status(config.project_dir)
    if status is None:
        raise RedisUnavailable(
            f"no Redis URL is configured (REDIS_URL, --redis-url or [tool.sandboxrunner] "
            f"redis_url) and no embedded server runs for {config.project_dir}; `top` does not "
            f"start one: start a supervisor (`sandboxrunner start`) or set REDIS_URL")
    return str(status["url"])


def run_top(config: Config, *, once: bool = False, as_json: bool = False,
            width: int | None = None, refresh_s: float = 1.0) -> None:
    if not (once or as_json):
        run_live(config, refresh_s)
        return
    reader = SnapshotReader(config, resolve_url(config))
    try:
        snap = reader.read()
    finally:
        reader.close()
    if as_json:
        sys.stdout.write(json.dumps(snap.to_json(), indent=2) + "\n")
        return
    console = Console(width=width, soft_wrap=False)
    with console.capture() as captured:
        console.print(render(snap, console.width))
    # tables pad every line to the full width: trim it, for files and bug reports
    sys.stdout.write("\n".join(line.rstrip() for line in captured.get().splitlines()) + "\n")


# -- the live screen ---------------------------------------------------------------------


class _Screen:
    """What the live screen shows each refresh: the dashboard, or that Redis is unreachable
    (above the last snapshot, if any). Resolves the URL lazily, so it can wait for Redis."""

    def __init__(self, config: Config, console: Console, refresh_s: float) -> None:
        self.config, self.console, self.refresh_s = config, console, refresh_s
        self.reader: SnapshotReader | None = None
        self.last: Snapshot | None = None
        self.failing_since: float | None = None
        self.attempts = 0

    def frame(self) -> RenderableType:
        width, height = self.console.size
        try:
            if self.reader is None:
                self.reader = SnapshotReader(self.config, resolve_url(self.config))
            snap = self.reader.read()
        except (RedisUnavailable, RedisRefused) as exc:
            return self._unreachable(exc, width, height)
        self.last, self.failing_since, self.attempts = snap, None, 0
        return render(snap, width, height, self.console,
                      hint=f"q quits · every {self.refresh_s:g}s")

    def _unreachable(self, exc: RedisUnavailable | RedisRefused, width: int,
                     height: int) -> RenderableType:
        self.failing_since = self.failing_since or time.time()
        self.attempts += 1
        since = time.strftime("%H:%M:%S", time.localtime(self.failing_since))
        panel = Panel(Text.assemble(
            (str(exc), "bold"), f"\nretrying every {self.refresh_s:g}s since {since} "
            f"(attempt {self.attempts}) · q quits"),
            title="Redis unreachable" if isinstance(exc, RedisUnavailable) else "Redis refused",
            title_align="left", border_style="red")
        if self.last is None:
            return panel
        return Group(panel, Text("last snapshot:", style="dim"),
                     render(self.last, width, max(5, height - 6), self.console))

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


@contextmanager
def _keys_from_stdin() -> Iterator[Callable[[float], bool]]:
    """Yields wait(timeout_s) -> True when q was pressed; stdin in cbreak mode meanwhile."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        def sleep(timeout_s: float) -> bool:
            time.sleep(timeout_s)
            return False

        yield sleep
        return
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd, termios.TCSANOW)  # keys arrive one by one; Ctrl-C stays SIGINT

    def wait(timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                pressed = os.read(fd, 64)
                if not pressed or b"q" in pressed.lower():
                    return True  # q, or stdin closed: nobody is left to press it
        return False

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_live(config: Config, refresh_s: float = 1.0) -> None:
    """The full-screen dashboard until q, Ctrl-C, SIGTERM or SIGHUP; restores the terminal."""
    screen = _Screen(config, Console(), refresh_s)

    def leave(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)  # unwinds through the finally blocks that restore the terminal

    previous = {s: signal.signal(s, leave) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with _keys_from_stdin() as wait, Live(console=screen.console, screen=True,
                                              auto_refresh=False) as live:
            while True:
                live.update(screen.frame(), refresh=True)
                if wait(refresh_s):
                    return
    except KeyboardInterrupt:
        return
    finally:
        screen.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
