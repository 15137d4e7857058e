"""Fault tests: counts its runs and shows whether a run is still going.

Each run appends ``start PID TIME`` to ``DATA['dir']/<job id>``, then a ``tick PID TIME``
line every DATA['tick'] s (default 0.05) for DATA['seconds'] s, then ``end PID TIME``.
A run that goes on after its process should be dead shows up as ticks after the kill.
"""

import os
import time
from pathlib import Path


def _line(path: Path, word: str) -> None:
    with open(path, "a") as fh:
        fh.write(f"{word} {os.getpid()} {time.time()}\n")


def run(data, ctx):
    path = Path(data["dir"]) / ctx.job.id
    _line(path, "start")
    end = time.monotonic() + data.get("seconds", 0)
    while time.monotonic() < end:
        time.sleep(min(data.get("tick", 0.05), max(0.0, end - time.monotonic())))
        _line(path, "tick")
    _line(path, "end")
    return {"job": ctx.job.id, "pid": os.getpid(), "attempt": ctx.job.attempt}
