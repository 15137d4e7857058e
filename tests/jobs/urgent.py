import time

worker = "priority"


def run(data):
    return {"urgent": data, "at": time.time()}
