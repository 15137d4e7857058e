"""What SIGINT and SIGTERM do to `sandboxrunner start`: the first drains, the second stops now.

  first signal    the supervisor stops claiming and waits up to grace_period for its running
                  jobs (the log says how long and for how many), hands back the ones still
                  running, and the process exits 0.
  second signal   stop now: the running jobs are handed back at once (they run again on
                  another supervisor; not counted as stalls), children are killed with their
                  process trees, and the process exits 128 + the signal's number (130 for
                  Ctrl-C, 143 for SIGTERM).

The handler only writes the signal's number to a pipe: it runs in the main thread between
two bytecodes, wherever that thread is, so it must take no lock (one the main thread holds
would deadlock it) and do no logging. The main thread waits on that pipe; the drain runs on
a thread of its own, which writes a 0 to the same pipe when it is done.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DONE = 0  # written by the drain thread: not a signal number


class SignalPipe:
    """SIGINT and SIGTERM as bytes on a pipe the main thread can wait on. No child holds
    it: children come from the fork server, forked before the pipe exists or spawned
    without it."""

    def __enter__(self) -> SignalPipe:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.close(self._read_fd)
        os.close(self._write_fd)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.post(signum)

    def post(self, value: int) -> None:
        try:
            os.write(self._write_fd, bytes([value]))
        except BlockingIOError:
            pass  # the pipe is full of signals already: one more changes nothing

    def next(self) -> int:
        """Wait for the next signal number (or DONE)."""
        select.select([self._read_fd], [], [])
        return os.read(self._read_fd, 1)[0]


def serve_until_signal(supervisor: Supervisor) -> int:
    """Start SUPERVISOR, serve until a signal, drain; returns the process's exit code."""
    with SignalPipe() as signals:
        try:
            supervisor.start()
        except BaseException:
            supervisor.stop(grace_ms=0)
            raise
        first = signals.next()
        _log_drain(supervisor, first)
        failure: list[BaseException] = []
        drain = threading.Thread(target=_drain, args=(supervisor, signals, failure),
                                 name="sr-stop")
        drain.start()
        forced_by = 0
        while (got := signals.next()) != DONE:
            if not forced_by:
                forced_by = got
                log.warning("received %s again: stopping now, handing %d running job(s) "
                            "back", signal.Signals(got).name, supervisor.jobs_in_hand())
                supervisor.stop_now()
        drain.join()
    if failure:
        raise failure[0]
    return 128 + forced_by if forced_by else 0


def _drain(supervisor: Supervisor, signals: SignalPipe, failure: list[BaseException]) -> None:
    try:
        supervisor.stop()
    except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
        failure.append(exc)
    finally:
        signals.post(DONE)


def _log_drain(supervisor: Supervisor, signum: int) -> None:
    name = signal.Signals(signum).name
    running = supervisor.jobs_in_hand()
    if not running:
        log.info("received %s: no job running, stopping", name)
        return
    again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {name} again"
    log.info("received %s: draining: waiting up to %g s for %d running job(s); %s to "
             "stop now", name, supervisor.config.grace_period / 1000, running, again)
