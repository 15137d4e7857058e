"""Sleeps data['seconds'] on each attempt; allowed 3 retries (a cancel must not use them)."""

import time

retries = 3
backoff = 10


def run(data, ctx):
    with open(data["file"], "a") as fh:
        fh.write(f"{ctx.job.attempt}\n")
    time.sleep(data["seconds"])
    raise RuntimeError("never finishes well")
