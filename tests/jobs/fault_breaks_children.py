"""Process-mode fault: while the file named by $SR_TEST_BREAK_CHILDREN exists, every new
child fails as it sets itself up (as if its resource limits could not be applied).

A job file, so that the patch is in every process children come from: the supervisor
imports it before a fork server is forked from it, and a spawned fork server imports the
job files itself. Without that variable (every other test) it does nothing."""

import os

from sandboxrunner.executors import in_child

_working = in_child._apply_limits


def _apply_limits(limits):
    marker = os.environ.get("SR_TEST_BREAK_CHILDREN")
    if marker and os.path.exists(marker):
        raise RuntimeError("no database for this child")
    _working(limits)


in_child._apply_limits = _apply_limits


def run(data):
    return data
