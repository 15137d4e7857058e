"""Process-mode tests: hold DATA['mib'] MiB of touched memory for DATA['hold'] seconds."""

import time


def run(data):
    blocks = []
    for _ in range(data["mib"]):
        blocks.append(bytearray(b"x" * (1024 * 1024)))
    time.sleep(data.get("hold", 0))
    return len(blocks)
