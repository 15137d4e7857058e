"""Shutdown tests: runs long the first time and returns at once when run again.

Each run appends "pid grandchild-pid" to DATA['dir']/<job id>; with DATA['grandchild']
the first run also starts a `sleep` subprocess (its pid is the second field, else 0), so a
test can check that a forced stop leaves none of the job's processes behind.
"""

import os
import subprocess
import time
from pathlib import Path


def run(data, ctx):
    path = Path(data["dir"]) / ctx.job.id
    earlier = path.read_text().splitlines() if path.exists() else []
    grandchild = None
    if data.get("grandchild") and not earlier:
        grandchild = subprocess.Popen(["sleep", "3600"])
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()} {grandchild.pid if grandchild else 0}\n")
    if not earlier:
        time.sleep(data["seconds"])
    return {"runs": len(earlier) + 1}
