"""The threads that run one queue's sync handlers in thread mode: started on demand, kept
while work keeps coming, and no more of them than the jobs that actually wait.

A task (one job) goes to a free thread when there is one. A thread counts as free from
the moment its handler returned, while it still writes that job's outcome (the slot is
freed there, and the fetcher hands the next job over at once): the next job waits for
that write rather than for a new thread. When no thread is free, the first EAGER_THREADS
threads start at once; beyond them, threads are started only when the threads stall: no
thread took a task for SPAWN_AFTER_S while tasks waited (the spawner thread then starts
one per task that no free thread will take). Short jobs therefore share a few threads
however fast they come, and however many are handed over at once (a claim of a deep
queue hands over up to 200), while jobs that block (sleep, I/O) still get a thread each,
a few milliseconds late. Every thread is a stack the
supervisor keeps: a flood of no-op jobs used to grow a pool past 200 threads and its RSS
with it. A thread idle for IDLE_THREAD_EXIT_S ends.

Counts, under one condition: ``threads`` started and not ended, ``free`` of them (a new
thread counts free from its start: it is on its way to take a task), ``waiting``: when
each task not yet taken was put, oldest first (tasks are taken in that order), and
``taken_at``: when a thread last took a task. A task no free thread will take exists
while ``len(waiting) > free``.
"""

from __future__ import annotations

import queue as queue_mod
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

EAGER_THREADS = 4
SPAWN_AFTER_S = 0.005
IDLE_THREAD_EXIT_S = 60.0

# runs one task's handler; returns what is left to do once the thread counts as free
RunTask = Callable[[Any], Callable[[], None]]


class JobThreads:
    """The job threads of one queue (module docstring)."""

    def __init__(self, name: str, run: RunTask) -> None:
        self._name, self._run = name, run
        self._tasks: queue_mod.SimpleQueue[Any] = queue_mod.SimpleQueue()
        self._cond = threading.Condition()
        self._threads = 0
        self._free = 0
        self._waiting: deque[float] = deque()
        self._taken_at = 0.0
        self._stopping = False
        self._spawner = threading.Thread(target=self._spawn_late, name=f"{name}-spawner",
                                         daemon=True)
        self._spawner.start()

    def put(self, task: Any) -> None:
        """Run TASK on a job thread: a free one, or one started for it (module docstring)."""
        with self._cond:
            self._waiting.append(time.monotonic())
            eager = len(self._waiting) > self._free and self._threads < EAGER_THREADS
            if eager:
                self._threads += 1
                self._free += 1
            elif len(self._waiting) > self._free:
                self._cond.notify()  # the spawner looks again once it waited long enough
        self._tasks.put(task)
        if eager:
            self._start()

    def counts(self) -> tuple[int, int]:
        """(threads, free threads)."""
        with self._cond:
            return self._threads, self._free

    def stop(self) -> None:
        """End every thread once its current task is done (they are daemon threads)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            threads = self._threads
        for _ in range(threads):
            self._tasks.put(None)

    def _start(self) -> None:
        threading.Thread(target=self._main, name=f"{self._name}-job", daemon=True).start()

    def _spawn_late(self) -> None:
        with self._cond:
            while not self._stopping:
                short = len(self._waiting) - self._free
                if short <= 0:
                    self._cond.wait()
                    continue
                # how long no thread took a task while one waited: threads that keep
                # taking tasks serve the rest soon enough, more would only contend
                stalled_s = time.monotonic() - max(self._waiting[0], self._taken_at)
                if stalled_s < SPAWN_AFTER_S:
                    self._cond.wait(SPAWN_AFTER_S - stalled_s)
                    continue
                self._threads += short
                self._free += short
                for _ in range(short):
                    self._start()

    def _main(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=IDLE_THREAD_EXIT_S)
            except queue_mod.Empty:
                with self._cond:
                    if self._free > len(self._waiting):  # nobody needs this thread
                        self._free -= 1
                        self._threads -= 1
                        return
                continue
            if task is None:
                return
            with self._cond:
                self._free -= 1
                self._waiting.popleft()
                self._taken_at = time.monotonic()
            after = self._run(task)
            with self._cond:
                self._free += 1
            after()
