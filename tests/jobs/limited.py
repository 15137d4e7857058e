"""Rate-limited to 5 a second across every supervisor."""

rate_limit = "5/s"


def run(data, ctx):
    return ctx.job.id
