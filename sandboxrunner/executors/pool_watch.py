"""What a pool's manager thread waits on: one selector over every child's message pipe,
output pipe and pidfd, plus a wakeup pipe that other threads write to (a job handed
over with a sooner deadline, a new fork server, the pool closing)."""

from __future__ import annotations

import os
import selectors

from .pool_child import Child

MSG, OUT, EXIT = 0, 1, 2  # event kinds, in the order they are handled


class PoolWatch:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)

    def watch(self, child: Child) -> None:
        os.set_blocking(child.msg_fd, False)
        os.set_blocking(child.out_fd, False)
        self._selector.register(child.msg_fd, selectors.EVENT_READ, (child, MSG))
        self._selector.register(child.out_fd, selectors.EVENT_READ, (child, OUT))
        if child.pidfd >= 0:
            self._selector.register(child.pidfd, selectors.EVENT_READ, (child, EXIT))

    def unwatch(self, *fds: int) -> None:
        for fd in fds:
            try:
                self._selector.unregister(fd)
            except (KeyError, ValueError):
                pass  # not watched (any more), or -1

    def wait(self, timeout_s: float | None) -> list[tuple[Child, int]]:
        """The children's events once one comes, TIMEOUT_S passes or `wake` is called:
        a child's messages before its output, both before its exit."""
        events = []
        for key, _mask in self._selector.select(timeout_s):
            if key.data is None:
                self._drain_wakeups()
            else:
                events.append(key.data)
        events.sort(key=lambda event: event[1])
        return events

    def wake(self) -> None:
        """Cut the wait short (any thread; nothing happens once closed)."""
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # already full of wakeups
        except OSError:
            pass  # closed: -1

    def close(self) -> None:
        self._selector.close()
        os.close(self._wake_r)
        self._wake_w, wake_w = -1, self._wake_w  # wake() now writes nowhere
        os.close(wake_w)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
