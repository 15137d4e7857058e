"""No-op job: returns its input (a copy of worker_jobs/noop.py)."""


def run(data):
    return data
