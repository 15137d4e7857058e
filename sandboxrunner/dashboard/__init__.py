"""The web dashboard: what `sandboxrunner top` shows, as pages a browser follows live, plus
the job and queue actions, mounted inside the user's own web app or served standalone.

What a user mounts::

    from sandboxrunner.dashboard import asgi_app, wsgi_app
    app.mount("/admin/queues", asgi_app())               # FastAPI, Starlette
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/admin/queues": wsgi_app()})  # Flask

``sandboxrunner dashboard`` (cli_dashboard.py) serves the same app on its own (uvicorn).
Which Redis: ``config`` (a `Config`) or keyword overrides as `init_worker` takes them, else
the project's configuration, as every command reads it; without a Redis URL, the project's
running embedded server. The dashboard never starts one (an empty new server would show a
healthy, idle system that is not the real one); until one runs, its pages say so.

Pages (app.py routes them; a route is relative to where the app is mounted):

  /                      overview: everything `top` shows (snapshot.py's Snapshot)
  /queues/Q              a queue's jobs per state, a page at a time (list_jobs cursors)
  /jobs/ID               one job: data, result, error and traceback, every attempt's error,
                         timings, progress and its log lines, followed live while it runs;
                         ID may be the 8 hex digits `top` shows (see "Short ids")
  /lookup?id=ID          the job page of ID, full or short (a 303 to /jobs/FULL_ID)
  /fragment/overview, /fragment/jobs/ID
                         the parts of those pages that change, polled by the pages
  POST /jobs/ID/cancel, /jobs/ID/retry, /jobs/ID/delete, /queues/Q/pause,
       /queues/Q/resume, /queues/Q/retry-failed, /cron/JOB/run-now    the actions (below)
  /metrics               the Prometheus text format (metrics.py), from the shared snapshot
                         and the job durations, each read at most once per ``refresh_s``
  /api/metrics           the same numbers as JSON (the shape in metrics.py's docstring)
  /api/snapshot          the snapshot as JSON (the shape in snapshot_records.py's docstring)
  /api/jobs/ID, /api/jobs/ID/log?after=STREAM_ID, /api/queues/Q/jobs?status=&cursor=
                         a job, its log lines after a stream id, a page of a queue's jobs

Live updates: a page polls one small server-rendered HTML fragment a second (``refresh_s``)
and puts it in place; the job page also asks for the log lines after the last it has, as
JSON, and appends them as text. One request a second works the same under ASGI and WSGI
(SSE would pin a WSGI worker thread per open tab). Every request for the overview is
served from one shared snapshot read per ``refresh_s`` (shared_snapshot.py), however many
tabs are open; a job page costs its own reads (at most three round trips: the record, its
supervisor's snapshot while it runs, its log lines).

Short ids: a start of an id (the 8 hex digits `top` and the CLI show) is looked up among
the ids Redis lists anyway, in two round trips and no key scan (`Store.listed_job_ids`:
running, waiting from either end, delayed, throttled, and each queue's history of
settled and failed jobs), exactly as `sandboxrunner job` does; it must match one job.

Read-only and actions: ``read_only=True`` (the default) renders no action and answers
every POST with 403. With ``read_only=False`` a job's page offers cancel (queued, delayed
or running), retry (failed or cancelled) and delete (any job not running: a running one
is cancelled first), a queue's page pause/resume and "retry all failed", and each cron row
of the overview "run now" (actions.py; the job files are loaded at the first run-now, as
a tick prepares its run from them). An action is a POST form; the first POST shows a
confirmation page (it works without JavaScript, and nothing runs by a stray click), whose
button posts again with ``confirmed=1``; only then does it run.

Security model (security.py):
  * CSRF: double-submit token. A page sets a random ``sr_csrf`` cookie (HttpOnly,
    SameSite=Strict, Path of the mount) and puts the same token in each form; a POST runs
    only when the form's token equals the cookie's (constant-time compare) and, when the
    browser sends an Origin header, it names this host. Another site can neither read the
    cookie nor send it along (SameSite), so it cannot forge the pair.
  * ``authorize(request) -> bool`` (sync or async, a Starlette `Request`) guards every
    route, pages, JSON and static files alike: False is 403. It runs on the event loop.
  * ``basic_auth=(user, password)``: HTTP basic authentication before anything else
    (401 with a challenge); the standalone server takes it from config or environment.
  * Escaping: every template is Jinja2 with autoescape on, and no value read from Redis is
    ever marked safe; the scripts insert log lines as text. A Content-Security-Policy of
    ``'self'`` only (no inline script or style) is sent too, so even a value that escaped
    its escaping could not run. No page or response shows a Redis password: the address
    is shown redacted, and errors name it without its password.
  * No external assets: the stylesheet and the one small script ship in this package.

Importing this package without its extra raises `ConfigError` naming
``pip install 'sandboxrunner[dashboard]'``; the core package never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

try:
    import a2wsgi  # noqa: F401
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - the test extra installs them
    raise ConfigError(f"the web dashboard needs packages that are not installed ({exc.name}): "
                      f"pip install 'sandboxrunner[dashboard]'") from exc

from .app import Authorize, DashboardSettings, build_app

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..config import Config

__all__ = ["asgi_app", "wsgi_app"]


def asgi_app(read_only: bool = True, *, authorize: Authorize | None = None,
             basic_auth: tuple[str, str] | None = None, config: Config | None = None,
             refresh_s: float = 1.0, **overrides: Any) -> Starlette:
    """The dashboard as an ASGI app, to mount at a route of a FastAPI or Starlette app.
    READ_ONLY: no actions (every POST is 403); AUTHORIZE guards every request; BASIC_AUTH
    asks for a user and password; CONFIG or OVERRIDES name the Redis (else the project's
    configuration); REFRESH_S: how often pages update, and how long a snapshot is shared."""
    return build_app(DashboardSettings.of(read_only, authorize, basic_auth, config,
                                          refresh_s, overrides))


def wsgi_app(read_only: bool = True, *, authorize: Authorize | None = None,
             basic_auth: tuple[str, str] | None = None, config: Config | None = None,
             refresh_s: float = 1.0, **overrides: Any) -> Any:
    """The same dashboard as a WSGI app (a2wsgi runs the ASGI app on its own event loop
    thread), for Flask, Django and other WSGI servers; arguments as `asgi_app`."""
    from a2wsgi import ASGIMiddleware

    return ASGIMiddleware(asgi_app(read_only, authorize=authorize, basic_auth=basic_auth,
                                   config=config, refresh_s=refresh_s,
                                   **overrides))  # type: ignore[arg-type]
