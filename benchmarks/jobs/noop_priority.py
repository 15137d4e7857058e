"""No-op job on the priority queue: returns its input (the deployments section)."""

worker = "priority"


def run(data):
    return data
