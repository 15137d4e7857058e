"""When a pool's manager thread must wake, and what is due then: job deadlines, the
SIGKILL after a SIGTERM, a silent child's grace, a startup timeout, the next fork after
a crash-loop backoff, and memory samples (memory_limit_per_child).

Deadlines sit in a heap; the entry of a job that finished before it is left there and
skipped when it comes up (and the heap is pruned when such entries pile up), which is
cheaper than removing it on the hot path of every job. Owned by the pool, lock held.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable

from .pool_child import Assigned, Busy, Child

MEMORY_SAMPLE_S = 0.1


class PoolTimers:
    def __init__(self, sample_memory: bool) -> None:
        self._deadlines: list[tuple[float, int, int, str]] = []  # at, seq, pid, job id
        self._seq = itertools.count()
        self._sample_memory = sample_memory
        self._next_sample = 0.0
        self._wake_at = 0.0  # when the manager thread wakes next, as sleep_for set it
        self.respawn_at = 0.0  # no fork before then (crash-loop backoff)

    def add_deadline(self, pid: int, job: Assigned) -> bool:
        """Watch JOB's deadline; True if the manager must be woken for it: it sleeps
        toward a later time (perhaps a finished job's stale deadline)."""
        heapq.heappush(self._deadlines, (job.deadline, next(self._seq), pid, job.id))
        wake_by = job.deadline
        if self._sample_memory:  # a new job's first memory sample is due at once
            wake_by = min(wake_by, self._next_sample)
        return wake_by < self._wake_at

    def expired(self, now: float, children: dict[int, Child]) -> list[tuple[Child, Assigned]]:
        """The busy children whose job's deadline passed, with that job."""
        due = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, pid, job_id = heapq.heappop(self._deadlines)
            child = children.get(pid)
            if child is not None and isinstance(child.state, Busy) \
                    and child.state.job.id == job_id:
                due.append((child, child.state.job))
        if len(self._deadlines) > 4 * len(children) + 64:  # entries of finished jobs
            self._deadlines = [d for d in self._deadlines if _is_current(d, children)]
            heapq.heapify(self._deadlines)
        return due

    def memory_due(self, now: float) -> bool:
        """Whether to sample the busy children's memory now (then not for a while)."""
        if not self._sample_memory or now < self._next_sample:
            return False
        self._next_sample = now + MEMORY_SAMPLE_S
        return True

    def sleep_for(self, now: float, children: Iterable[Child],
                  want_fork: bool) -> float | None:
        """How long the manager may wait for its children's pipes (None: until one
        speaks)."""
        times = [self._deadlines[0][0]] if self._deadlines else []
        busy = False
        for child in children:
            state = child.state
            if state.wake_at is not None:
                times.append(state.wake_at)
            busy = busy or state.__class__ is Busy
        if want_fork:
            times.append(self.respawn_at)
        if self._sample_memory and busy:
            times.append(self._next_sample)
        self._wake_at = min(times, default=float("inf"))
        return None if not times else max(0.0, self._wake_at - now)


def _is_current(entry: tuple[float, int, int, str], children: dict[int, Child]) -> bool:
    child = children.get(entry[2])
    return bool(child and child.job and child.job.id == entry[3])
