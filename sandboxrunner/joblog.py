"""Job log lines into Redis: a capped stream per job and one capped stream across jobs.

Lines are buffered and written by one background thread in pipelined batches, so a job
that logs in a tight loop costs it a list append, not a round trip. Bounds, so that a job
logging without end cannot exhaust Redis memory:
  * a line's message is cut at MAX_MESSAGE_CHARS (marked ``[truncated]``);
  * a job keeps its first ``log_max_lines`` lines, then one ``truncated`` marker line, and
    the rest are dropped (counted in the marker's data);
  * the cross-job stream ``PREFIX:logs`` keeps about RECENT_LOG_LINES lines (XADD MAXLEN ~).
A job's stream expires with its result (the finish script sets the TTL). Lines reach
Redis, and are read back, through the store (store.py: the one door to Redis).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 8192
RECENT_LOG_LINES = 2000
FLUSH_INTERVAL_S = 0.05


def _bounded(line: dict[str, Any]) -> dict[str, Any]:
    msg = line.get("msg", "")
    if len(msg) > MAX_MESSAGE_CHARS:
        line = {**line, "msg": msg[:MAX_MESSAGE_CHARS] + " [truncated]"}
    return line


class RedisLogSink:
    """Buffers log lines and writes them to Redis from a background thread."""

    def __init__(self, store: Store, max_lines: int, ttl_ms: int) -> None:
        self._store = store
        self._max_lines, self._ttl_ms = max_lines, ttl_ms
        self._buffer: list[tuple[str, str, dict[str, Any]]] = []
        self._counts: dict[str, int] = defaultdict(int)
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="sr-joblog", daemon=True)
        self._thread.start()

    def emit(self, job_id: str, queue: str, line: dict[str, Any]) -> None:
        with self._cond:
            self._counts[job_id] += 1
            count = self._counts[job_id]
            if count > self._max_lines + 1:
                return
            if count == self._max_lines + 1:
                line = {"ts": line["ts"], "level": "warn", "truncated": True,
                        "msg": f"log truncated: only the first {self._max_lines} lines are kept"}
            self._buffer.append((job_id, queue, _bounded(line)))
            self._cond.notify()

    def forget(self, job_id: str) -> None:
        """The job settled: stop counting its lines (keeps the counter map bounded)."""
        with self._cond:
            self._counts.pop(job_id, None)

    def logged(self, job_ids: list[str]) -> set[str]:
        """Those of JOB_IDS that wrote log lines since they started (not yet forgotten)."""
        with self._cond:
            return {i for i in job_ids if i in self._counts}

    def flush(self) -> None:
        with self._cond:
            batch, self._buffer = self._buffer, []
        if batch:
            self._write(batch)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=5)
        self.flush()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._buffer and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
            self._cond_wait_briefly()
            try:
                self.flush()
            except redis.RedisError as exc:
                log.warning("could not write job log lines to Redis: %s", exc)

    def _cond_wait_briefly(self) -> None:
        # gather a batch instead of one round trip per line
        with self._cond:
            self._cond.wait(FLUSH_INTERVAL_S)

    def _write(self, batch: list[tuple[str, str, dict[str, Any]]]) -> None:
        lines = [(job_id, json.dumps(line, default=str)) for job_id, _queue, line in batch]
        self._store.append_log_lines(lines, self._ttl_ms, RECENT_LOG_LINES)


# What a line's source is shown as, in `logs` and `top` alike: output a job printed is
# `out`/`err`, whatever level it was stored with; ctx.log lines show their level.
OUTPUT_LABELS = {"stdout": "out", "output": "out", "stderr": "err"}


def display_level(level: str, source: str = "") -> str:
    """The label a log line is shown with."""
    return OUTPUT_LABELS.get(source, level or "info")


def _decoded(raw: Any) -> dict[str, Any]:
    # a stream entry written by hand must not crash its reader: shown as its text
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "{}")
    try:
        line = json.loads(text)
    except ValueError:
        line = None
    return line if isinstance(line, dict) else {"msg": text, "level": "info"}


def read_job_log(store: Store, job_id: str, after: str = "-",
                 count: int = 10_000) -> list[tuple[str, dict[str, Any]]]:
    """Log lines of one job after stream id AFTER ('-' for all), oldest first."""
    out = []
    for entry_id, fields in store.job_log_entries(job_id, after, count):
        raw = (fields or {}).get(b"line") or (fields or {}).get("line")
        text_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        out.append((text_id, _decoded(raw)))
    return out
