"""A global singleton: one run at a time. Appends 'start' and 'end' lines to data['file']
so a test can count runs and see overlap; returns a token unique to the run."""

import time
import uuid

singleton = True


def run(data, ctx):
    with open(data["file"], "a") as fh:
        fh.write(f"start {ctx.job.id} {time.time()}\n")
    time.sleep(data.get("seconds", 0))
    if data.get("fail"):
        raise RuntimeError(f"run {ctx.job.id} failed on purpose")
    with open(data["file"], "a") as fh:
        fh.write(f"end {ctx.job.id} {time.time()}\n")
    return {"token": uuid.uuid4().hex, "job": ctx.job.id}
