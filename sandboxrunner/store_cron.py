"""The store's cron calls (cron.py fires and syncs the schedules; cron_state.py reads
them): each one script on the queue's cron hash, beside the queue's other keys. `Store`
(store.py) inherits them with its read side, one door to Redis.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .job import CronFired, CronRun, PreparedJob, text
from .store_reads import StoreReads


class StoreCron(StoreReads):
    """The cron calls of a `Store` (module docstring)."""

    def _run(self, name: str, keys: list[str], args: list[Any],
             replicated: bool = False) -> Any:
        """One script call: `Store._run` (store.py)."""
        raise NotImplementedError

    def cron_sync(self, queue: str, sid: str, entries: list[tuple[str, str, str, int, str]],
                  without_cron: Sequence[str] = ()) -> tuple[list[str], ...]:
        """Sync QUEUE's schedules with ENTRIES (name, pattern, tz, next ms, error), deleting
        those of WITHOUT_CRON (jobs the caller has with no cron on QUEUE; see cron_sync.lua);
        returns the names added or changed, removed, and kept without the caller."""
        args: list[Any] = [sid, json.dumps(list(without_cron))]
        for entry in entries:
            args += list(entry)
        replies = self._run("cron_sync", [self.keys.cron(queue)], args)
        return tuple([text(n) for n in names] for names in replies)

    def cron_fire(self, run: CronRun) -> CronFired:
        """Enqueue (or skip, for a busy singleton) one tick of a schedule, at most once."""
        k, call = self.keys, run.call
        got = self._run(
            "cron_fire", [k.cron(call.queue), k.wait(call.queue), k.stats(call.queue),
                          *k.new_job(call.queue, call.job_id, call.singleton_key)],
            [k.queue_prefix(call.queue), run.pattern, run.tz, run.tick_ms, run.next_ms,
             *call.script_args()])
        return CronFired(text(got[0]), text(got[1]), int(got[2]))

    def cron_run_now(self, call: PreparedJob) -> tuple[str, str, int]:
        """Enqueue CALL, a cron job's run, now and count it as a manual run of its schedule
        (cron_run_now.lua): the outcome ('queued', 'busy' or 'missing'), the job id (the
        singleton's run in flight when busy), and the queue's live supervisors."""
        k, queue = self.keys, call.queue
        got = self._run(
            "cron_run_now", [k.cron(queue), k.wait(queue), k.stats(queue), k.sups(queue),
                             *k.new_job(queue, call.job_id, call.singleton_key)],
            [k.queue_prefix(queue), self.config.lease_ms, *call.script_args()])
        return text(got[0]), text(got[1]), int(got[2])

    def cron_remove(self, queue: str, name: str) -> bool:
        """Delete NAME's schedule from QUEUE's cron hash (one command: no script needed)."""
        return bool(self.redis.hdel(self.keys.cron(queue), name))
