"""Appends a line to a file per run: lets a test count how often a job really ran."""

import os
import time


def run(data):
    with open(data["file"], "a") as fh:
        fh.write(f"{os.getpid()} {time.time()}\n")
    time.sleep(data.get("seconds", 0))
    return {"pid": os.getpid()}
