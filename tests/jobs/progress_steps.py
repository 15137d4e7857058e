import time


def run(data, ctx):
    """Report progress STEPS times as fast as it can, then hold HOLD seconds at the end."""
    steps = data.get("steps", 10)
    for i in range(steps):
        ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
    time.sleep(data.get("hold", 0))
    return {"steps": steps}
