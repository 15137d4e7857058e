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

A batch holds at most MAX_BATCH calls: Redis runs the script in one go and serves nobody
else meanwhile (about 10 us a call, so 100 ms for a full batch); split bigger ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .calls import check_retries, check_timeout, singleton_key
from .config import Config
from .errors import InvalidJobData
from .job import encode_data, text
from .keys import new_job_ids
from .registry import JobSpec

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


def prepare_batch(spec: JobSpec, items: Any, timeout: int | None, retries: int | None,
                  config: Config) -> PreparedBatch:
    """ITEMS (one job's data each) as calls of job SPEC, every one checked; InvalidJobData
    naming the first bad one (nothing is enqueued)."""
    if not isinstance(items, (list, tuple)):
        raise InvalidJobData(f"enqueue_many of job {spec.name!r} takes a list of job data, "
                             f"one item per job, got {type(items).__name__}; nothing was "
                             "enqueued")
    if len(items) > MAX_BATCH:
        raise InvalidJobData(f"enqueue_many of job {spec.name!r} takes at most {MAX_BATCH} "
                             f"jobs a call, got {len(items)}: split the batch; nothing was "
                             "enqueued")
    timeout_ms = check_timeout(timeout if timeout is not None
                               else spec.timeout_ms or config.job_timeout)
    retries = check_retries(retries if retries is not None else spec.retries)
    max_bytes = int(config.max_data_size * 1024 * 1024)
    single = spec.singleton is not None and spec.singleton is not False
    data, keys = [], []
    for index, item in enumerate(items):
        try:
            data.append(encode_data(item, max_bytes))
            if single:
                keys.append(singleton_key(spec, item))
        except InvalidJobData as exc:
            raise InvalidJobData(f"enqueue_many of job {spec.name!r}: item {index} of the "
                                 f"batch: {exc}; nothing was enqueued") from None
    return PreparedBatch(spec.queue, spec.name, timeout_ms, retries,
                         json.dumps(spec.backoff) if spec.backoff else "", single,
                         tuple(new_job_ids(spec.queue, len(data))), tuple(data), tuple(keys))
