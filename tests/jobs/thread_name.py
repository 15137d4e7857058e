"""Returns the name of the thread it ran on."""

import threading


def run(data, ctx):
    return threading.current_thread().name
