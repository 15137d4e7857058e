"""enqueue_many: a batch of calls of one job in one round trip, all or nothing.

``enqueue_many(name, items, timeout=None, retries=None)`` checks every item as `enqueue`
checks its data (calls.py: JSON under ``max_data_size``, a JSON singleton key) before
anything reaches Redis: one bad item refuses the whole batch (`InvalidJobData` naming the
item), and nothing is enqueued. The batch then goes to Redis as one script call
(scripts/enqueue_many.lua), which writes all of it or none of it; a full Redis refuses it
whole (`RedisFull`). Ids are chosen before the first try, so a retry after a lost reply
attaches to what the first try wrote instead of enqueueing it twice.

It returns one `JobHandle` per item, in order. A keyed singleton's call whose key a job in
flight holds (enqueued before, or earlier in the same batch) gets that job's handle, as
`enqueue` would. Nobody is notified when the jobs settle: a handle fetches its result when
asked (``handle.result()``, ``await handle``). ``delay``, ``run_at`` and ``job_id`` are
options of one call (`enqueue`), not of a batch.

This module holds a batch's records (what travels to Redis and back); calls.py checks
and prepares a batch (`prepare_batch`) as it does every call. A batch holds at most
MAX_BATCH calls: Redis runs the script in one go and serves nobody else meanwhile (about
10 us a call, so 100 ms for a full batch); split bigger ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .job import text

MAX_BATCH = 10_000


@dataclass(frozen=True)
class PreparedBatch:
    """A batch checked and ready to enqueue: what its calls share, and per call its id,
    data JSON and singleton key (all '' when the job is not a singleton)."""

    queue: str
    name: str
    timeout_ms: int
    retries: int
    backoff_json: str
    singleton: bool
    ids: tuple[str, ...]
    data: tuple[str, ...]
    singleton_keys: tuple[str, ...]

    def script_args(self) -> list[Any]:
        """ARGV[3..] of enqueue_many.lua (the caller puts the queue prefix and lease first)."""
        args: list[Any] = [self.name, self.timeout_ms, self.retries, self.backoff_json,
                           "1" if self.singleton else "0"]
        if self.singleton:
            for triple in zip(self.ids, self.data, self.singleton_keys, strict=True):
                args += triple
        else:
            for pair in zip(self.ids, self.data, strict=True):
                args += pair
        return args


@dataclass(frozen=True)
class BatchResult:
    """What enqueue_many.lua did: the job each call is (its own id, or the one in flight
    holding its singleton key), and the supervisors serving the queue."""

    job_ids: list[str]
    live_supervisors: int

    @classmethod
    def from_reply(cls, batch: PreparedBatch, reply: Sequence[Any]) -> BatchResult:
        job_ids = list(batch.ids)
        for i in range(2, len(reply), 2):
            job_ids[int(reply[i])] = text(reply[i + 1])
        return cls(job_ids, int(reply[0]))
