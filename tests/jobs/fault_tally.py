"""Load test: appends the job's id to a file per process, so a test can count how often
each job ran across supervisors. One open file per process, one write per job."""

import os
import threading

_lock = threading.Lock()
_files: dict[str, object] = {}


def run(data, ctx):
    with _lock:
        fh = _files.get(data["dir"])
        if fh is None:
            fh = _files[data["dir"]] = open(  # noqa: SIM115 - kept for the process's life
                os.path.join(data["dir"], f"{os.getpid()}.ids"), "a", buffering=1)
        fh.write(ctx.job.id + "\n")
    return data["n"]
