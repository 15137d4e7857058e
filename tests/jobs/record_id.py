"""Appends its job id to data['file'] (a line per run) after data.get('seconds', 0)."""

import time


def run(data, ctx):
    time.sleep(data.get("seconds", 0))
    with open(data["file"], "a") as fh:
        fh.write(f"{ctx.job.id}\n")
    return {"ran": ctx.job.id}
