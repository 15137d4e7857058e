"""Process-mode tests: grow by DATA['step_mib'] MiB of touched memory every DATA['every']
seconds up to DATA['max_mib'] MiB, then hold it for DATA['hold'] seconds."""

import time


def run(data):
    blocks = []
    while len(blocks) * data["step_mib"] < data["max_mib"]:
        blocks.append(bytearray(b"x" * (data["step_mib"] * 1024 * 1024)))
        time.sleep(data["every"])
    time.sleep(data.get("hold", 0))
    return len(blocks)
