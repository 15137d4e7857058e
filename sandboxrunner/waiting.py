"""How a caller waits for its job's outcome: the rules both twins follow (`Client._wait`
on a thread, `Client._await` on an event loop), kept here so that they cannot drift.

Waiting never hangs silently. A caller waits in slices of at most a lease (config
``lease_ms``), less when its ``wait_timeout`` ends sooner, which raises `WaitTimeout`.
Between slices it re-reads the job: its outcome if it settled (which also covers a result
published while the listener was reconnecting), else what Redis shows of its supervision
(`supervision.JobWatch`). A job queued or active while no live supervisor served its
queue at two checks in a row raises `NoSupervisor`, saying what Redis shows
(`supervision.no_supervisor`); the job stays queued and runs once a supervisor starts. A
check that cannot reach Redis counts as unknown: the caller keeps waiting, and its
listener reconnects. A job still queued on a paused queue is said once (a warning): it
waits until the queue is resumed.
"""

from __future__ import annotations

import logging
import time

import redis

from .connection import reason
from .errors import WaitTimeout
from .job import Status
from .supervision import JobWatch, no_supervisor

log = logging.getLogger(__name__)

IN_FLIGHT = (Status.QUEUED, Status.DELAYED, Status.THROTTLED, Status.ACTIVE)


class Wait:
    """One caller's wait for JOB_ID: how long each slice is, and the verdict of each check."""

    def __init__(self, job_id: str, wait_timeout: int | None, lease_ms: int,
                 live: int) -> None:
        """LIVE: the supervisors of the queue seen live when the job was enqueued."""
        self.job_id, self.wait_timeout, self.lease_ms = job_id, wait_timeout, lease_ms
        self.live = live  # at the last check; -1: unknown (Redis did not answer)
        self._started = time.monotonic()
        self._said_paused = False

    def slice_s(self) -> float:
        """How long to wait before the next check; WaitTimeout once wait_timeout is over."""
        slice_s = self.lease_ms / 1000
        if self.wait_timeout is not None:
            left_s = self.wait_timeout / 1000 - (time.monotonic() - self._started)
            if left_s <= 0:
                raise WaitTimeout(self.job_id, self.wait_timeout)
            slice_s = min(slice_s, left_s)
        return slice_s

    def judge(self, watch: JobWatch) -> None:
        """Raise NoSupervisor when no live supervisor served the job's queue at this check
        nor at the one before while the job is in flight."""
        live = watch.live_count(self.lease_ms)
        if live == 0 and self.live == 0 and watch.status in IN_FLIGHT:
            raise no_supervisor(watch, self.lease_ms)
        self.live = live
        if watch.paused and watch.status == Status.QUEUED and not self._said_paused:
            self._said_paused = True
            log.warning("queue %r is paused: job %s waits until it is resumed "
                        "(`sandboxrunner resume %s`)", watch.queue, self.job_id, watch.queue)

    def unreachable(self, exc: redis.RedisError) -> None:
        """A check could not reach Redis: keep waiting, the live count unknown."""
        log.warning("waiting for job %s: cannot reach Redis (%s); still waiting",
                    self.job_id, reason(exc))
        self.live = -1
