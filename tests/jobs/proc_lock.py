"""Process-mode tests: take a module-level lock, as a connection pool or a logging
handler does. A test holds LOCK in a thread of the supervisor's process; a child forked
from that process would inherit it held, and wait for a thread it does not have."""

import os
import threading

LOCK = threading.Lock()


def run(data):
    acquired = LOCK.acquire(timeout=(data or {}).get("wait", 1.0))
    if acquired:
        LOCK.release()
    return {"acquired": acquired, "pid": os.getpid()}
