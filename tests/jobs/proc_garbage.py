"""Process-mode tests: corrupt the child's message pipe to the supervisor."""

import os
import time

from sandboxrunner.executors import in_child


def run(data):
    os.write(in_child.CURRENT.sender.fd, b"\xff\xff\xff\xff\x00garbage")
    time.sleep(5)
