"""The dashboard's actions, POST only, when it is not read-only: cancel, retry and delete
a job, retry every failed job of a queue, pause and resume a queue, run a cron job now. The
guard (security.py) answers 403 to every POST of a read-only dashboard before any of this
runs.

Each action takes two POSTs: the first, from the button on a job's or queue's page (or a
cron row of the overview), shows a page asking to confirm (no JavaScript needed, and a
stray click changes nothing); its button posts again with ``confirmed=1`` and the action
runs, then a page says what it did in one line, with a link: back where it came from, or
to the job's queue after a delete (the job is gone), or to the new job after a run-now.
An action the state refuses (a running job to delete, a singleton cron job in flight, no
such schedule) is that one line on the same page, with the error's HTTP status. Both POSTs
must carry the CSRF token (security.csrf_ok): without it, 403 and nothing runs. The form
is read here (url-encoded, at most MAX_FORM_BYTES), so no multipart parser is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..errors import SandboxRunnerError
from ..job_control import checked_job_id
from ..keys import queue_of_job
from ..queue_control import check_queue
from .security import CSRF_FIELD, csrf_ok

if TYPE_CHECKING:
    from .app import Pages
    from .source import Source

MAX_FORM_BYTES = 4096


@dataclass(frozen=True)
class Action:
    label: str  # the button
    question: str  # the confirmation page asks it; {} is the job id, queue or cron job


@dataclass(frozen=True)
class Done:
    """What an action did, in one line, and where its page links (None: back where the
    action came from)."""

    message: str
    link: str | None = None
    link_text: str = "back"


@dataclass(frozen=True)
class Asked:
    """One action asked for: what, of what, the page it came from and where it posts."""

    action: Action
    subject: str  # the job id, queue name or cron job name
    back: str
    post_to: str


JOB_ACTIONS = {
    "cancel": Action("Cancel", "Cancel job {}? If it has not started it never runs; if it "
                               "runs, its supervisor stops it within a heartbeat."),
    "retry": Action("Retry", "Run job {} again, under the same id?"),
    "delete": Action("Delete", "Delete job {}? Its record, result and log lines are "
                               "removed; if it has not run, it leaves its queue and never "
                               "runs."),
}
QUEUE_ACTIONS = {
    "pause": Action("Pause", "Pause queue {}? No supervisor starts its jobs until it is "
                             "resumed; running jobs finish and enqueues still wait."),
    "resume": Action("Resume", "Resume queue {}? Supervisors start its jobs again."),
    "retry-failed": Action("Retry all failed", "Run every failed job of queue {} again?"),
}
RUN_CRON_NOW = Action("Run now", "Run cron job {} now, as its next tick would (its data, "
                                 "queue and singleton rule)? Its schedule goes on as "
                                 "before.")


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}


def routes(pages: Pages, source: Source) -> list[Route]:
    """The POST routes of the actions."""

    async def job_action(request: Request) -> Response:
        name, job_id = request.path_params["action"], request.path_params["job_id"]
        if name not in JOB_ACTIONS:
            return PlainTextResponse(f"no action {name!r} for a job", 404)
        checked_job_id(job_id)  # a malformed id: 404 before anything is asked
        asked = Asked(JOB_ACTIONS[name], job_id, f"/jobs/{job_id}", f"/jobs/{job_id}/{name}")
        return await _act(request, pages, asked, lambda: _job_action(source, name, job_id))

    async def queue_action(request: Request) -> Response:
        name, queue = request.path_params["action"], request.path_params["queue"]
        if name not in QUEUE_ACTIONS:
            return PlainTextResponse(f"no action {name!r} for a queue", 404)
        check_queue(queue)
        asked = Asked(QUEUE_ACTIONS[name], queue, f"/queues/{queue}", f"/queues/{queue}/{name}")
        return await _act(request, pages, asked,
                          lambda: Done(f"{queue}: " + (
                              source.retry_failed(queue) if name == "retry-failed"
                              else source.set_paused(queue, name == "pause"))))

    async def run_cron_now(request: Request) -> Response:
        job = request.path_params["job"]
        asked = Asked(RUN_CRON_NOW, job, "/", f"/cron/{job}/run-now")
        return await _act(request, pages, asked, lambda: _run_cron_now(source, job))

    return [Route("/jobs/{job_id}/{action}", job_action, methods=["POST"]),
            Route("/queues/{queue}/{action}", queue_action, methods=["POST"]),
            Route("/cron/{job}/run-now", run_cron_now, methods=["POST"])]


def _job_action(source: Source, name: str, job_id: str) -> Done:
    if name == "delete":  # its page is gone: the done page links to its queue
        queue = queue_of_job(job_id)
        return Done(source.delete(job_id), f"/queues/{queue}", f"to queue {queue}")
    return Done(f"{job_id}: " + (source.cancel(job_id) if name == "cancel"
                                 else source.retry(job_id)))


def _run_cron_now(source: Source, job: str) -> Done:
    job_id = source.run_cron_now(job)
    return Done(f"queued cron job {job} now as job {job_id}", f"/jobs/{job_id}",
                "to the new job")


async def _act(request: Request, pages: Pages, asked: Asked, run: Callable[[], Done]
               ) -> Response:
    form = await _form(request)
    if not csrf_ok(request, form.get(CSRF_FIELD)):
        return PlainTextResponse("this form expired or did not come from the dashboard "
                                 "(no valid CSRF token): reload the page and try again", 403)
    if form.get("confirmed") != "1":
        return pages.render(request, "confirm.html", action=asked.action,
                            question=asked.action.question.format(asked.subject),
                            back=asked.back, post_to=asked.post_to)
    try:
        done = await run_in_threadpool(run)
    except SandboxRunnerError as exc:  # refused, or Redis trouble: one line, its status
        return pages.render(request, "done.html", pages.http_status(exc), message=str(exc),
                            back=asked.back, link_text="back", failed=True)
    pages.source.shared.invalidate()  # the next page shows what the action did
    return pages.render(request, "done.html", message=done.message,
                        back=done.link or asked.back, link_text=done.link_text, failed=False)
