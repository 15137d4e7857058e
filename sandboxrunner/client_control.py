"""The job-control calls of a `client.Client`: get_job, list_jobs, retry, cancel,
delete_job, run_cron_now and their asyncio twins. They delegate to job_control.py,
job_listing.py and cron.py, which need only the client's store and config (`Controls`);
the asyncio twins run the same calls on a thread (they are not on any hot path).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from . import job_control, job_listing
from .config import Config
from .job_control import CancelResult, DeleteResult, JobInfo
from .job_listing import JobPage
from .redis_errors import api_boundary
from .registry import Registry
from .store import Store

if TYPE_CHECKING:
    from .client import JobHandle

log = logging.getLogger(__name__)


class Controls(Protocol):
    """What the job-control functions need of a client."""

    store: Store
    config: Config


class JobControlCalls:
    """Mixed into `client.Client`, which provides the attributes and `handle`."""

    store: Store
    config: Config
    registry: Registry

    def handle(self, job_id: str) -> JobHandle:
        raise NotImplementedError

    @api_boundary("read job {}")
    def get_job(self, job_id: str) -> JobInfo:
        return job_control.read_job(self, job_id)

    @api_boundary("read job {}")
    async def aget_job(self, job_id: str) -> JobInfo:
        return await asyncio.to_thread(job_control.read_job, self, job_id)

    def list_jobs(self, queue: str | None = None, status: str | None = None,
                  name: str | None = None, limit: int = 50,
                  cursor: str | None = None) -> JobPage:
        return self._list_jobs("list jobs", queue, status, name, limit, cursor)

    async def alist_jobs(self, queue: str | None = None, status: str | None = None,
                         name: str | None = None, limit: int = 50,
                         cursor: str | None = None) -> JobPage:
        return await asyncio.to_thread(self._list_jobs, "list jobs", queue, status, name,
                                       limit, cursor)

    @api_boundary("{}")
    def _list_jobs(self, _doing: str, *args: Any) -> JobPage:
        return job_listing.list_page(self, *args)

    @api_boundary("retry job {}")
    def retry(self, job_id: str) -> JobHandle:
        return self.handle(job_control.retry_job(self, job_id))

    @api_boundary("retry job {}")
    async def aretry(self, job_id: str) -> JobHandle:
        return self.handle(await asyncio.to_thread(job_control.retry_job, self, job_id))

    @api_boundary("cancel job {}")
    def cancel(self, job_id: str) -> CancelResult:
        return job_control.cancel_job(self, job_id)

    @api_boundary("cancel job {}")
    async def acancel(self, job_id: str) -> CancelResult:
        return await asyncio.to_thread(job_control.cancel_job, self, job_id)

    @api_boundary("delete job {}")
    def delete_job(self, job_id: str) -> DeleteResult:
        return job_control.remove_job(self, job_id)

    @api_boundary("delete job {}")
    async def adelete_job(self, job_id: str) -> DeleteResult:
        return await asyncio.to_thread(job_control.remove_job, self, job_id)

    @api_boundary("run cron job {!r} now")
    def run_cron_now(self, name: str) -> str:
        return self._run_cron_now(name)

    @api_boundary("run cron job {!r} now")
    async def arun_cron_now(self, name: str) -> str:
        return await asyncio.to_thread(self._run_cron_now, name)

    def _run_cron_now(self, name: str) -> str:
        from .cron_now import run_now

        run = run_now(self.store, self.registry, self.config, name)
        if run.live_supervisors == 0:
            log.warning("no supervisor serves queue %r yet; cron job %s run by hand as job %s "
                        "waits for one (`sandboxrunner start`)", run.queue, name, run.job_id)
        return run.job_id

