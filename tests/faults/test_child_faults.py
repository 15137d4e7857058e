"""Process mode: a child that cuts itself off from its supervisor.

The rest of this family is in tests/test_processes.py: a child ignoring SIGTERM or stuck
in one C call past its deadline (test_a_job_past_its_timeout_is_killed_and_replaced),
killed by a signal or exiting (test_a_child_that_dies_fails_its_job_clearly_and_is_replaced),
writing garbage to its pipe (test_a_child_breaking_the_pipe_protocol_is_killed_and_replaced),
and crash loops (test_children_dying_too_fast_back_off_instead_of_a_fork_storm).
"""

from __future__ import annotations

import time

import psutil
import pytest

from sandboxrunner import JobFailed
from tests.faults.common import wait_for
from tests.supervisors import client_for, running_supervisor

PROC = {"use_separate_process": True, "concurrency": 2, "workers": "default"}


def _idle_children(sup: object) -> set[int]:
    snap = sup.executors["default"].snapshot()  # type: ignore[attr-defined]
    return {c["pid"] for c in snap["children"] if c["state"] == "idle"}


def test_a_child_that_closes_its_message_pipe_is_killed_its_job_failed_and_replaced(
        redis_url: str) -> None:
    with running_supervisor(redis_url, **PROC) as sup, client_for(redis_url) as client:
        before = wait_for(lambda: len(kids := _idle_children(sup)) == 2 and kids,
                          what="a full pool")
        started = time.monotonic()
        with pytest.raises(JobFailed) as info:
            client.run_job("fault_close_pipe", {"seconds": 30}, timeout=20_000)
        elapsed = time.monotonic() - started
        after = wait_for(lambda: len(kids := _idle_children(sup)) == 2 and kids,
                         timeout_s=3, what="the pool to be full again")
        assert client.run_job("echo", 1)["echo"] == 1
    assert elapsed < 3  # not left to run until its 20 s deadline
    assert info.value.error_type == "ChildProtocolError"
    assert "closed its message pipe" in info.value.error_message
    gone = before - after
    assert len(gone) == 1 and not psutil.pid_exists(gone.pop())
