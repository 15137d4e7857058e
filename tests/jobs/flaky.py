"""Fails until it has run data["succeed_on"] times; counts runs in data["file"]."""

retries = 2
backoff = {"type": "exponential", "delay": 100}


def run(data, ctx):
    with open(data["file"], "a") as fh:
        fh.write(f"{ctx.job.attempt}\n")
    if ctx.job.attempt < data["succeed_on"]:
        raise ConnectionError(f"attempt {ctx.job.attempt} failed")
    return {"attempt": ctx.job.attempt}
