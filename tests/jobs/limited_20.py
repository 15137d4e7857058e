"""Rate-limited to 20 a second across every supervisor (the two-supervisor test)."""

rate_limit = "20/s"


def run(data):
    return data
