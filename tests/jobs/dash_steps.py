import time


def run(data, ctx):
    """Log a line and report progress at each of STEPS steps, PAUSE_S apart."""
    steps = data["steps"]
    for i in range(steps):
        ctx.log(f"step {i + 1} of {steps}")
        ctx.progress((i + 1) / steps, f"step {i + 1}")
        time.sleep(data["pause_s"])
    return {"steps": steps}
