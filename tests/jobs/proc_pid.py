"""Process-mode tests: which process ran the job."""

import os
import time


def run(data, ctx):
    time.sleep((data or {}).get("seconds", 0))
    return {"pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0)}
