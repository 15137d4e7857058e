"""Always fails, and is retried once, 10 s later: a retry pending while nothing runs."""

retries = 1
backoff = 10_000


def run(data, ctx):
    raise ConnectionError(f"attempt {ctx.job.attempt} failed")
