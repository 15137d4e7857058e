"""The dashboard's actions, POST only, when it is not read-only: cancel and retry a job,
retry every failed job of a queue, pause and resume a queue (delete and run-cron-now join
them with their back ends). The guard (security.py) answers 403 to every POST of a
read-only dashboard before any of this runs.

Each action takes two POSTs: the first, from the button on a job's or queue's page,
shows a page asking to confirm (no JavaScript needed, and a stray click changes nothing);
its button posts again with ``confirmed=1`` and the action runs, then a page says what it
did, with a link back. Both POSTs must carry the CSRF token (security.csrf_ok): without
it, 403 and nothing runs. The form is read here (url-encoded, at most MAX_FORM_BYTES), so
no multipart parser is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..job_control import checked_job_id
from ..queue_control import check_queue
from .security import CSRF_FIELD, csrf_ok

if TYPE_CHECKING:
    from .app import Pages
    from .source import Source

MAX_FORM_BYTES = 4096


@dataclass(frozen=True)
class Action:
    label: str  # the button
    question: str  # the confirmation page asks it; {} is the job id or queue name
    back: str  # the page to go back to: "job" or "queue"


JOB_ACTIONS = {
    "cancel": Action("Cancel", "Cancel job {}? If it has not started it never runs; if it "
                               "runs, its supervisor stops it within a heartbeat.", "job"),
    "retry": Action("Retry", "Run job {} again, under the same id?", "job"),
}
QUEUE_ACTIONS = {
    "pause": Action("Pause", "Pause queue {}? No supervisor starts its jobs until it is "
                             "resumed; running jobs finish and enqueues still wait.", "queue"),
    "resume": Action("Resume", "Resume queue {}? Supervisors start its jobs again.", "queue"),
    "retry-failed": Action("Retry all failed", "Run every failed job of queue {} again?",
                           "queue"),
}


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
        run = source.cancel if name == "cancel" else source.retry
        return await _act(request, pages, JOB_ACTIONS[name], name, job_id, f"/jobs/{job_id}",
                          lambda: run(job_id))

    async def queue_action(request: Request) -> Response:
        name, queue = request.path_params["action"], request.path_params["queue"]
        if name not in QUEUE_ACTIONS:
            return PlainTextResponse(f"no action {name!r} for a queue", 404)
        check_queue(queue)
        return await _act(request, pages, QUEUE_ACTIONS[name], name, queue,
                          f"/queues/{queue}",
                          lambda: source.retry_failed(queue) if name == "retry-failed"
                          else source.set_paused(queue, name == "pause"))

    return [Route("/jobs/{job_id}/{action}", job_action, methods=["POST"]),
            Route("/queues/{queue}/{action}", queue_action, methods=["POST"])]


async def _act(request: Request, pages: Pages, action: Action, name: str, subject: str,
               back: str, run: object) -> Response:
    form = await _form(request)
    if not csrf_ok(request, form.get(CSRF_FIELD)):
        return PlainTextResponse("this form expired or did not come from the dashboard "
                                 "(no valid CSRF token): reload the page and try again", 403)
    if form.get("confirmed") != "1":
        return pages.render(request, "confirm.html", action=action, name=name,
                            question=action.question.format(subject), back=back,
                            post_to=f"{back}/{name}")
    assert callable(run)
    message = await run_in_threadpool(run)
    pages.source.shared.invalidate()  # the next page shows what the action did
    return pages.render(request, "done.html", message=f"{subject}: {message}", back=back)
