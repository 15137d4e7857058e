"""A call from inside a running job (a nested run_job or arun_job): the one rule both
twins follow so that it cannot wait for a slot its own caller holds.

While such a call is under way, its job's slot counts as waiting on it (the executor's
slots: `executors.threads.Slots` in thread mode, `context.PoolSlots` in a child). A call
on the job's own queue that would make every slot of the queue wait that way is refused
with `DeadlockError`, unless another live supervisor serves the queue and may run the
inner job. The slot is counted before the counts are compared, so of two calls that
start together at least one sees the other.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from .context import current_job
from .errors import DeadlockError


class NestedCall:
    """``with NestedCall(queue, how) as call:`` around a call from inside a job (a no-op from
    outside one, or for another queue than the job's): while in it, the job's slot
    counts as waiting; `would_wait_for_itself` says whether the call must ask Redis for
    the live supervisors and then `refuse_if_alone`."""

    def __init__(self, queue: str, how: str = "run_job") -> None:
        """HOW: the call, as the error names it (run_job or arun_job)."""
        self.queue, self.how = queue, how
        ctx = current_job.get()
        slots = getattr(ctx, "slots", None)
        self._slots: Any = slots if slots is not None and slots.queue == queue else None
        self._job_name = ctx.job.name if ctx is not None else ""
        self._waiting = 0

    def __enter__(self) -> NestedCall:
        if self._slots is not None:
            self._slots.enter_nested()
            self._waiting = self._slots.waiting_nested()  # this call's slot included
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._slots is not None:
            self._slots.leave_nested()

    def would_wait_for_itself(self) -> bool:
        """Every slot of the queue waits on a nested call, this one's included."""
        return self._slots is not None and self._waiting >= self._slots.capacity

    def refuse_if_alone(self, live_supervisors: int) -> None:
        """Raise DeadlockError when no other supervisor than this job's serves the queue."""
        if live_supervisors > 1:
            return
        raise DeadlockError(
            f"{self.how} from inside job {self._job_name!r} would wait for a free slot of "
            f"queue {self.queue!r}, but every one of its {self._slots.capacity} slot(s) is "
            "held by a job waiting the same way and no other supervisor serves the queue; "
            "raise concurrency, use enqueue() without waiting, or put the inner job on the "
            "other queue")
