"""Process-mode tests: write the child's pid to DATA['file'], then never return."""

import os
import signal
import time


def run(data):
    with open(data["file"], "w") as fh:
        fh.write(str(os.getpid()))
    how = data["how"]
    if how == "sleep":
        time.sleep(3600)
    elif how == "c_call":
        return sum(range(10**12))  # one C call, never back in the bytecode loop
    elif how == "catch_all":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            try:
                time.sleep(3600)
            except BaseException:  # noqa: BLE001 - the point of the test
                pass
    elif how == "spin":
        while True:
            pass
