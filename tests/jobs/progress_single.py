"""A singleton that reports its progress slowly: a second call attaches to the first run."""

import time

singleton = True


def run(data, ctx):
    steps = data.get("steps", 5)
    for i in range(steps):
        time.sleep(data.get("pause", 0.15))
        ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
    return {"steps": steps}
