"""Keeps a fork out of OpenSSL: a child forked while another thread is inside OpenSSL 3
inherits its locks held (the algorithm store's, taken in every TLS handshake and hash)
and deadlocks at its first TLS connection or hash, waiting for a thread it does not have.

`FORK_GUARD.shared()` wraps our own OpenSSL work in threads that may run while the
process pool forks: TLS handshakes of rediss:// connections and the hashing of the Lua
scripts (store.py). `FORK_GUARD.exclusive()` wraps each fork (executors/children.py). A
fork waits briefly for the handshakes in progress and is put off if they last; a
handshake waits only while a fork is under way, never for another handshake, so an
event loop running several handshakes cannot deadlock. Not covered: OpenSSL used by
other code of the same process, such as an app's own HTTPS calls in its threads next to
an in-process worker (init_worker) with separate processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ForkGuard:
    """Shared while a thread is inside OpenSSL, exclusive while the process forks."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._forking = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._inside += 1
        try:
            yield
        finally:
            with self._cond:
                self._inside -= 1
                if not self._inside:
                    self._cond.notify_all()

    def wait_until_clear(self, timeout_s: float) -> bool:
        """Wait up to TIMEOUT_S until no thread is inside a guarded section; True if so.
        Nothing is held afterwards: a caller that must not wait with its own locks held
        waits here first, then takes `exclusive` with no wait."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._inside or self._forking), timeout_s)

    @contextmanager
    def exclusive(self, timeout_s: float) -> Iterator[bool]:
        """Yields True once no thread is inside a guarded section (none enters until the
        block ends), or False after TIMEOUT_S: the caller must not fork then, and tries
        again later rather than wait on a slow handshake with its own locks held."""
        with self._cond:
            clear = self._cond.wait_for(lambda: not (self._inside or self._forking),
                                        timeout_s)
            if clear:
                self._forking = True
        try:
            yield clear
        finally:
            if clear:
                with self._cond:
                    self._forking = False
                    self._cond.notify_all()


FORK_GUARD = ForkGuard()
# the child inherits the guard mid-fork (exclusive, from the forking thread): start clean
os.register_at_fork(after_in_child=FORK_GUARD._reset)
