"""list_jobs: the jobs of some queues and statuses, a page at a time, never a key scan.

Where each status is listed (keys.py): queued, the wait list from the next job to run;
delayed, the delayed set, soonest due first; active, the leases of the queue's
supervisors; completed, failed and cancelled, their ``done:STATUS`` index, newest first
(kept as long as the records: result_ttl). A listing walks the (queue, status) segments
in that order; the cursor is where it stopped (segment and position). A page reads at
most ``limit`` ids (``limit * NAME_SCAN_FACTOR`` with a name filter, which may then return
fewer jobs, and a cursor to go on) and their records in one round trip per segment.

A page is a snapshot: jobs move on between pages (a queued job is claimed, an active one
settles), so a job may show up on two pages or on none; a settled status's index only
grows at its head, so paging through it from its cursor skips nothing that was there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidJobData
from .job_control import JOB_FIELDS, JobInfo, job_info
from .keys import QUEUES

if TYPE_CHECKING:
    from .client_control import Controls

LISTED_STATUSES = ("queued", "delayed", "active", "completed", "failed", "cancelled")
MAX_LIMIT = 1000
NAME_SCAN_FACTOR = 10  # with a name filter, a page reads at most limit * this many ids


@dataclass(frozen=True)
class JobPage:
    """A page of a listing: its jobs, and the cursor of the next page (None: the end)."""

    items: list[JobInfo]
    cursor: str | None


@dataclass
class _Walk:
    segments: list[tuple[str, str]]
    at: int  # index into segments
    offset: int  # position inside the current segment

    def cursor(self) -> str | None:
        return None if self.at >= len(self.segments) else f"{self.at}.{self.offset}"

    def next_segment(self) -> None:
        self.at, self.offset = self.at + 1, 0


def list_page(client: Controls, queue: str | None = None, status: str | None = None,
              name: str | None = None, limit: int = 50, cursor: str | None = None) -> JobPage:
    """A page of the jobs of QUEUE (default: all) in STATUS (default: all), named NAME
    (default: any); CURSOR: the previous page's. InvalidJobData for a bad argument."""
    walk = _walk(queue, status, cursor)
    _check(name, limit)
    budget = limit * (NAME_SCAN_FACTOR if name else 1)
    items: list[JobInfo] = []
    while walk.at < len(walk.segments) and len(items) < limit and budget > 0:
        seg_queue, seg_status = walk.segments[walk.at]
        want = budget if name else min(limit - len(items), budget)
        listed = client.store.listed_ids(seg_queue, seg_status, walk.offset, want)
        budget -= len(listed)
        views = client.store.job_views(seg_queue, [i for i, _ in listed], JOB_FIELDS)
        for (job_id, due_ms), fields in zip(listed, views, strict=True):
            walk.offset += 1
            if fields.get("status") and (name is None or fields.get("name") == name):
                info = job_info(job_id, fields, due_ms, None)
                if info.status == seg_status:  # else it moved on since it was listed
                    items.append(info)
            if len(items) == limit:
                break
        if len(listed) < want:
            walk.next_segment()
    return JobPage(items, walk.cursor())


def _walk(queue: str | None, status: str | None, cursor: str | None) -> _Walk:
    if queue is not None and queue not in QUEUES:
        raise InvalidJobData(f"list_jobs: queue {queue!r} is not one of "
                             f"{', '.join(QUEUES)}; nothing listed")
    if status is not None and status not in LISTED_STATUSES:
        raise InvalidJobData(f"list_jobs: status {status!r} is not one of "
                             f"{', '.join(LISTED_STATUSES)}; nothing listed")
    segments = [(q, s) for q in ((queue,) if queue else QUEUES)
                for s in ((status,) if status else LISTED_STATUSES)]
    at, offset = _position(cursor, len(segments))
    return _Walk(segments, at, offset)


def _position(cursor: str | None, segments: int) -> tuple[int, int]:
    if cursor is None:
        return 0, 0
    at, _, offset = str(cursor).partition(".")
    if at.isdigit() and offset.isdigit() and int(at) < segments:
        return int(at), int(offset)
    raise InvalidJobData(f"list_jobs: cursor {cursor!r} is not one a page of this listing "
                         "gave (same queue and status); start again without a cursor")


def _check(name: Any, limit: Any) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidJobData(f"list_jobs: limit {limit!r} must be a whole number from 1 to "
                             f"{MAX_LIMIT}; nothing listed")
    if name is not None and (not isinstance(name, str) or not name):
        raise InvalidJobData(f"list_jobs: name {name!r} must be a job name; nothing listed")


def failed_job_ids(client: Controls, queue: str | None, name: str | None) -> list[str]:
    """The ids of every failed job of QUEUE named NAME, read a page at a time. Read in full
    before any is retried: a retry takes a job out of the index being paged, and a job
    that fails again meanwhile is not retried twice."""
    ids: list[str] = []
    cursor = None
    while True:
        page = list_page(client, queue, "failed", name, MAX_LIMIT, cursor)
        ids += [info.id for info in page.items]
        cursor = page.cursor
        if cursor is None:
            return ids


def list_jobs(queue: str | None = None, status: str | None = None, name: str | None = None,
              limit: int = 50, cursor: str | None = None) -> JobPage:
    """A page of jobs with the process's default client: ``page.items``, and
    ``page.cursor`` for the next page (None: the end)."""
    from .process_client import default_client

    return default_client().list_jobs(queue, status, name, limit, cursor)


async def alist_jobs(queue: str | None = None, status: str | None = None,
                     name: str | None = None, limit: int = 50,
                     cursor: str | None = None) -> JobPage:
    """The asyncio twin of list_jobs."""
    from .process_client import default_client

    return await default_client().alist_jobs(queue, status, name, limit, cursor)
