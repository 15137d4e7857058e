"""What a starting supervisor checks of its Redis, and Redis's memory limit as we read it.

Two things would lose jobs silently later, so a supervisor looks at them when it starts:

  * the ACL may refuse its user the reply channels (Redis 7 gives a new user none unless
    told: ``acl-pubsub-default resetchannels``): every finish script would then fail on
    its PUBLISH, and no outcome would ever be written. One PUBLISH to a channel nobody
    listens on finds out, and the start fails with `RedisPermissionDenied`;
  * a ``maxmemory-policy`` other than ``noeviction`` lets a full Redis evict keys: a
    queued job's record, a whole wait list, a lease. BullMQ warns about the same; we warn
    loudly and go on (a managed Redis may not let its user change the policy). With
    noeviction a full Redis refuses new jobs instead (`RedisFull`), and the scripts that
    drain it still run (their ``allow-oom`` flag): nothing is lost.

`RedisMemory` (snapshot_records.py) is the reading of INFO memory, which `top` shows too;
in a cluster every master is read, and one whose policy may evict is warned about.
"""

from __future__ import annotations

import logging

import redis

from .config import redact_url
from .connection import reason
from .snapshot_records import SAFE_POLICY, RedisMemory
from .store import Store

log = logging.getLogger(__name__)


def check_at_start(store: Store) -> None:
    """Check STORE's Redis before a supervisor serves it: raises the redis-py error of a
    refused reply channel; logs a warning for an evicting policy, or when it cannot tell."""
    store.probe_reply_channel()
    where = redact_url(store.url)
    try:
        memory = RedisMemory.combined(store.memory_info())
    except redis.ResponseError as exc:  # an ACL without INFO: say what to check by hand
        log.warning("could not read the maxmemory-policy of Redis at %s (%s): make sure it "
                    "is %s, or a full Redis may evict queued jobs", where, reason(exc),
                    SAFE_POLICY)
        return
    if memory.may_evict:
        limit = (f"maxmemory {memory.maxmemory_bytes / 2**20:.1f} MiB" if memory.maxmemory_bytes
                 else "no maxmemory yet")
        log.warning("IMPORTANT: Redis at %s has maxmemory-policy %s (%s): once full it evicts "
                    "keys, and queued jobs, their records and leases among them are lost for "
                    "good. Set it to %s (CONFIG SET maxmemory-policy %s, and in its config "
                    "file): a full Redis then refuses new jobs (RedisFull) and loses none",
                    where, memory.policy, limit, SAFE_POLICY, SAFE_POLICY)
