"""Pausing and resuming a queue: `pause`, `resume` and their asyncio twins `apause`,
`aresume`, as module functions on the process's default client (as `run_job`).

A paused queue is a key in Redis (``keys.Keys.paused``, no TTL): it outlives every
supervisor and is seen by all of them. The claim script hands out no job of a paused queue
(see scripts/claim.lua; a job a BLMOVE moved just before the pause goes back to the head of
the queue, unstarted), so every supervisor stops claiming it within one fetch, and a
paused supervisor looks again every `fetching.PAUSED_POLL_S`. Jobs already running finish;
enqueues are still accepted and wait; the other queue is not affected.
"""

from __future__ import annotations

from .errors import UnknownQueue
from .keys import QUEUES
from .process_client import default_client
from .redis_errors import api_boundary


def check_queue(queue: object) -> str:
    """QUEUE if it names a queue; UnknownQueue (one line, naming the queues) if not."""
    if queue not in QUEUES:
        raise UnknownQueue(f"no queue {queue!r}: the queues are {', '.join(QUEUES)}")
    return str(queue)


class _QueueControl:
    """The calls, on a client (its `url` and `config` name the Redis in errors)."""

    def __init__(self) -> None:
        client = default_client()
        self.url, self.config = client.url, client.config
        self.client = client

    @api_boundary("pause or resume queue {!r}")
    def set_paused(self, queue: str, paused: bool) -> bool:
        return self.client.store.set_paused(check_queue(queue), paused)

    @api_boundary("pause or resume queue {!r}")
    async def aset_paused(self, queue: str, paused: bool) -> bool:
        store = self.client.async_store()
        return await store.set_paused(check_queue(queue), paused)


def pause(queue: str) -> bool:
    """Stop every supervisor claiming jobs of QUEUE until `resume`; True if it was not
    paused already. Running jobs finish, and enqueues are still accepted."""
    return _QueueControl().set_paused(queue, True)


def resume(queue: str) -> bool:
    """Let supervisors claim jobs of QUEUE again; True if it was paused."""
    return _QueueControl().set_paused(queue, False)


async def apause(queue: str) -> bool:
    """The asyncio twin of `pause`."""
    return await _QueueControl().aset_paused(queue, True)


async def aresume(queue: str) -> bool:
    """The asyncio twin of `resume`."""
    return await _QueueControl().aset_paused(queue, False)
