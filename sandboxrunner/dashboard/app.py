"""The dashboard's routes: the pages, the fragments they poll, the JSON API and the static
files, behind the guard (security.py); the POST actions are in actions.py. Every Redis
read runs on Starlette's thread pool through `Source` (source.py); the overview reads
only the shared snapshot (shared_snapshot.py). Routes, live updates and the security
model are described in the package docstring.

Errors: ours become a page (or, under /api/, JSON ``{"error": ...}``) with one line
saying what is wrong: 404 for an unknown job or queue, 400 for a bad cursor or status,
409 for an action the job's state refuses, 503 while Redis is unreachable or refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import errors
from ..config import Config, load_config
from ..job_listing import LISTED_STATUSES
from ..top_render import fmt_clock
from . import actions, views
from .metrics import metrics_json, metrics_text
from .security import Authorize, Guard, csrf_token, set_csrf_cookie
from .source import Source

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50
STATUS_CODES: tuple[tuple[type[errors.SandboxRunnerError], int], ...] = (
    (errors.JobNotFound, 404), (errors.UnknownQueue, 404), (errors.UnknownJob, 404),
    (errors.CronScheduleNotFound, 404), (errors.InvalidJobData, 400),
    (errors.InvalidJobState, 409), (errors.RedisUnavailable, 503),
    (errors.RedisRefused, 503))

__all__ = ["Authorize", "DashboardSettings", "build_app"]


@dataclass(frozen=True)
class DashboardSettings:
    """How one dashboard app was asked for (asgi_app's arguments, checked)."""

    read_only: bool
    authorize: Authorize | None
    basic_auth: tuple[str, str] | None
    config: Config
    refresh_s: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, read_only: bool, authorize: Authorize | None,
           basic_auth: tuple[str, str] | None, config: Config | None, refresh_s: float,
           overrides: Mapping[str, Any]) -> DashboardSettings:
        if not isinstance(read_only, bool):
            raise errors.ConfigError(f"dashboard read_only: expected true or false, got "
                                     f"{read_only!r}")
        if isinstance(refresh_s, bool) or not isinstance(refresh_s, int | float) \
                or not 0.05 <= refresh_s <= 60:
            raise errors.ConfigError(f"dashboard refresh_s: expected seconds from 0.05 to "
                                     f"60, got {refresh_s!r}")
        if authorize is not None and not callable(authorize):
            raise errors.ConfigError(f"dashboard authorize: expected a function taking the "
                                     f"request, got {authorize!r}")
        _check_basic_auth(basic_auth)
        if config is not None and overrides:
            raise errors.ConfigError("dashboard: pass config or keyword settings, not both")
        return cls(read_only, authorize, basic_auth,
                   config if config is not None else load_config(overrides), float(refresh_s))


def _check_basic_auth(basic_auth: Any) -> None:
    if basic_auth is None:
        return
    if not (isinstance(basic_auth, tuple) and len(basic_auth) == 2
            and all(isinstance(part, str) and part for part in basic_auth)):
        shown = "(user, '***')" if isinstance(basic_auth, tuple) else type(basic_auth).__name__
        raise errors.ConfigError(f"dashboard basic_auth: expected (user, password), both "
                                 f"non-empty text, got {shown}")


class Pages:
    """The GET routes: pages, the fragments they poll, and the JSON API."""

    def __init__(self, settings: DashboardSettings, source: Source) -> None:
        self.settings, self.source = settings, source
        self.env = views.environment()

    def render(self, request: Request, template: str, http_status: int = 200,
               **values: Any) -> HTMLResponse:
        token = csrf_token(request)
        html = self.env.get_template(template).render(
            base=request.scope.get("root_path", "").rstrip("/"), csrf=token,
            read_only=self.settings.read_only,
            refresh_ms=round(self.settings.refresh_s * 1000), **values)
        response = HTMLResponse(html, http_status)
        set_csrf_cookie(response, request, token)
        return response

    @staticmethod
    def http_status(exc: Exception) -> int:
        """The HTTP status of one of our errors (STATUS_CODES; 500 for the others)."""
        return next((code for kind, code in STATUS_CODES if isinstance(exc, kind)), 500)

    async def overview(self, request: Request) -> Response:
        return await self._overview(request, "overview.html")

    async def overview_fragment(self, request: Request) -> Response:
        return await self._overview(request, "_overview.html")

    async def _overview(self, request: Request, template: str) -> Response:
        snap = await run_in_threadpool(self.source.snapshot)
        history = self.source.shared.jobs_per_s_history()
        return self.render(request, template, **views.overview(snap, history))

    async def queue(self, request: Request) -> Response:
        queue = request.path_params["queue"]
        status = request.query_params.get("status") or "queued"
        cursor = request.query_params.get("cursor") or None
        page = await run_in_threadpool(self.source.page, queue, status, cursor, PAGE_SIZE)
        snap = await run_in_threadpool(self.source.snapshot)
        stats = next(q for q in snap.queues if q.name == queue)
        return self.render(request, "queue.html", queue=stats, status=status, page=page,
                           statuses=LISTED_STATUSES, cursor=cursor)

    async def lookup(self, request: Request) -> Response:
        given = (request.query_params.get("id") or "").strip()
        job_id = await run_in_threadpool(self.source.resolve, given)
        return _redirect(request, f"/jobs/{job_id}")

    async def job(self, request: Request) -> Response:
        given = request.path_params["job_id"]
        job_id = await run_in_threadpool(self.source.resolve, given)
        if job_id != given:  # a short id: the page's address is the full one
            return _redirect(request, f"/jobs/{job_id}")
        view = await run_in_threadpool(self.source.job, job_id)
        rows = await run_in_threadpool(self.source.log_rows, job_id)
        return self.render(request, "job.html", **self._job_values(view), data=view.data,
                           log=rows, after=rows[-1].id if rows else "-")

    async def job_fragment(self, request: Request) -> Response:
        view = await run_in_threadpool(self.source.job, request.path_params["job_id"])
        return self.render(request, "_job.html", **self._job_values(view))

    def _job_values(self, view: Any) -> dict[str, Any]:
        info = view.info
        return {"job": info, "timings": views.job_timings(info),
                "actions": () if self.settings.read_only else views.job_actions(info),
                "result": views.pretty_json(info.result) if info.status == "completed"
                else None, "pretty": views.pretty_json}

    # -- JSON ---------------------------------------------------------------------------
    async def api_snapshot(self, request: Request) -> Response:
        snap = await run_in_threadpool(self.source.snapshot)
        return JSONResponse(snap.to_json())

    async def metrics(self, request: Request) -> Response:
        """The Prometheus text format (metrics.py), from the shared readings."""
        body, content_type = metrics_text(*await run_in_threadpool(self.source.metrics))
        return Response(body, headers={"content-type": content_type})

    async def api_metrics(self, request: Request) -> Response:
        return JSONResponse(metrics_json(*await run_in_threadpool(self.source.metrics)))

    async def api_job(self, request: Request) -> Response:
        view = await run_in_threadpool(self.source.job, request.path_params["job_id"])
        return JSONResponse({**view.info.as_dict(), "data": views.json_or_text(view.data)})

    async def api_log(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        after = request.query_params.get("after") or "-"
        rows = await run_in_threadpool(self.source.log_rows, job_id, after)
        view = await run_in_threadpool(self.source.job, job_id)
        return JSONResponse({"status": view.info.status,
                             "lines": [{"id": r.id, "ts_ms": r.ts_ms, "clock":
                                        fmt_clock(r.ts_ms), "label": r.label,
                                        "msg": r.msg} for r in rows]})

    async def api_queue_jobs(self, request: Request) -> Response:
        q = request.query_params
        limit = views.as_limit(q.get("limit"), PAGE_SIZE)
        page = await run_in_threadpool(self.source.page, request.path_params["queue"],
                                       q.get("status") or None, q.get("cursor") or None, limit)
        return JSONResponse({"items": [i.as_dict() for i in page.items], "cursor": page.cursor})


def _redirect(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + path, 303)


def _error_handler(pages: Pages) -> Callable[[Request, Exception], Response]:
    def handle(request: Request, exc: Exception) -> Response:
        status = pages.http_status(exc)
        if "/api/" in request.url.path:
            return JSONResponse({"error": str(exc)}, status)
        if request.url.path.endswith("/metrics"):  # a scraper, not a browser
            return PlainTextResponse(str(exc), status)
        return pages.render(request, "error.html", status, message=str(exc))

    return handle


def build_app(settings: DashboardSettings) -> Starlette:
    """The dashboard app for SETTINGS: routes behind the guard."""
    source = Source(settings.config, settings.refresh_s)
    pages = Pages(settings, source)
    routes = [
        Route("/", pages.overview), Route("/fragment/overview", pages.overview_fragment),
        Route("/queues/{queue}", pages.queue), Route("/lookup", pages.lookup),
        Route("/jobs/{job_id}", pages.job), Route("/fragment/jobs/{job_id}", pages.job_fragment),
        Route("/metrics", pages.metrics), Route("/api/metrics", pages.api_metrics),
        Route("/api/snapshot", pages.api_snapshot), Route("/api/jobs/{job_id}", pages.api_job),
        Route("/api/jobs/{job_id}/log", pages.api_log),
        Route("/api/queues/{queue}/jobs", pages.api_queue_jobs),
        *actions.routes(pages, source),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes,
                    exception_handlers={errors.SandboxRunnerError: _error_handler(pages)})
    app.add_middleware(Guard, read_only=settings.read_only, authorize=settings.authorize,
                       basic_auth=settings.basic_auth)
    app.state.source = source  # tests and the standalone server close it
    return app
