"""Process-mode fault: the job closes its child's message pipe to the supervisor, then
goes on running, so it can never report."""

import os
import time

from sandboxrunner.executors import in_child


def run(data):
    os.close(in_child.CURRENT.sender.fd)
    time.sleep(data.get("seconds", 30))
    return "reported nothing"
