"""Process-mode tests: a job that ends its own process in the way DATA names."""

import os
import signal
import sys


def run(data):
    how = data["how"]
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "os_exit":
        os._exit(data["code"])
    elif how == "sys_exit":
        sys.exit(data["code"])
    return "still alive"
