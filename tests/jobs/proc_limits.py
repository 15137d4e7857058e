"""Process-mode tests: run into a child_limits resource limit ('files' or 'memory')."""

import os


def run(data):
    if data["what"] == "files":
        return [os.open(os.devnull, os.O_RDONLY) for _ in range(100_000)]
    return len(bytearray(data["mib"] * 1024 * 1024))
