"""Fails until attempt data["succeed_on"]; appends "attempt epoch-seconds" to data["file"]
per run, so a test can read the gaps between attempts. Backoff 200, 400, 800 ms."""

import time

retries = 3
backoff = {"type": "exponential", "delay": 200}


def run(data, ctx):
    with open(data["file"], "a") as fh:
        fh.write(f"{ctx.job.attempt} {time.time()}\n")
    if ctx.job.attempt < data["succeed_on"]:
        raise ConnectionError(f"attempt {ctx.job.attempt} failed")
    return {"attempt": ctx.job.attempt}
