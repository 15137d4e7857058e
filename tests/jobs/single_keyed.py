"""A keyed singleton: one run at a time per data['key'] (compared as canonical JSON)."""

import time


def singleton(data):
    return data["key"]


def run(data, ctx):
    started = time.time()
    time.sleep(data.get("seconds", 0))
    with open(data["file"], "a") as fh:
        fh.write(f"{ctx.job.id} {started} {time.time()}\n")
    return {"job": ctx.job.id, "started": started}
