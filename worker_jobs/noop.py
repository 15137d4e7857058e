"""No-op job used by the benchmarks: returns its input."""


def run(data):
    return data
