"""Process-mode tests: corrupt the child's message pipe to the supervisor."""

import os
import time

from sandboxrunner import child


def run(data):
    os.write(child.CURRENT.sender.fd, b"\xff\xff\xff\xff\x00garbage")
    time.sleep(5)
