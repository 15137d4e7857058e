"""Starting the in-process worker from web apps, honouring auto_start.

Both helpers apply `should_auto_start`: the worker starts unless ``auto_start`` is false,
or this is production (``SANDBOXRUNNER_ENV=production`` or ``production = true``) and
``auto_start_production`` is false. When it does not start, the process only enqueues,
and a dedicated ``sandboxrunner start`` service runs the jobs.

ASGI (FastAPI, Starlette)::

    app = FastAPI(lifespan=sandboxrunner.integrations.lifespan)
    # or, with settings:  lifespan=sandboxrunner.integrations.make_lifespan(concurrency=50)

The worker starts on a thread before the app takes requests and drains on a thread at
shutdown, so the event loop is never blocked. To combine it with a lifespan of your own,
enter it inside yours: ``async with sandboxrunner.integrations.lifespan(app): yield``.

WSGI (Flask, Django, ...): call `auto_start_worker` where the app is built, in each
serving process. Under ``gunicorn --preload`` the app is built before the fork and
threads do not survive a fork, so call it from gunicorn's ``post_fork`` hook instead.
The worker stops at process exit (or call ``.stop()`` on the handle).

The web dashboard: with ``route`` set in ``[tool.sandboxrunner.dashboard]`` (and its
``read_only``, true by default), ``lifespan`` mounts ``sandboxrunner.dashboard.asgi_app``
there at startup, on any app with ``mount(path, app)`` (Starlette, FastAPI). The mount is
added after the app's own routes, so a catch-all route of the app comes first; mount it
yourself (``app.mount(route, asgi_app())``) to put it ahead. Where there is no lifespan or
no mount, it cannot: Flask and Django (WSGI) mount ``wsgi_app()`` themselves (werkzeug's
DispatcherMiddleware, a Django URL route to a WSGI app), as do frameworks such as
Litestar whose routes are fixed once the app is built.

Nothing here imports FastAPI or Starlette: ``lifespan`` is a plain async context manager
factory taking the app, which is what their ``lifespan=`` argument expects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from .config import load_config
from .dashboard_config import load_dashboard_config
from .worker import Worker, init_worker, should_auto_start

log = logging.getLogger(__name__)

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


def auto_start_worker(**overrides: Any) -> Worker | None:
    """`init_worker(**overrides)` if auto-start applies to this process, else None."""
    config = load_config(overrides)
    if not should_auto_start(config):
        reason = ("auto_start_production is off in production" if config.auto_start
                  else "auto_start is off")
        log.info("sandboxrunner worker not started in this process (%s): it only enqueues; "
                 "run `sandboxrunner start` as the worker service", reason)
        return None
    return init_worker(**overrides)


def make_lifespan(**overrides: Any) -> Lifespan:
    """An ASGI lifespan that runs `auto_start_worker(**overrides)` around the app."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        mount_dashboard(app, overrides)
        worker = await asyncio.to_thread(lambda: auto_start_worker(**overrides))
        try:
            yield
        finally:
            if worker is not None:
                await worker.astop()

    return lifespan


def mount_dashboard(app: Any, overrides: dict[str, Any]) -> None:
    """Mount the web dashboard at [tool.sandboxrunner.dashboard] ``route``, if one is set,
    on an app that can mount an ASGI app (``app.mount(path, app)``: Starlette, FastAPI)."""
    config = load_config(overrides)
    settings = load_dashboard_config(config.project_dir)
    if settings.route is None:
        return
    if not callable(getattr(app, "mount", None)):
        log.warning("[tool.sandboxrunner.dashboard] route %s not mounted: %s has no "
                    "mount(path, app); mount sandboxrunner.dashboard.asgi_app() yourself",
                    settings.route, type(app).__name__)
        return
    from .dashboard import asgi_app

    app.mount(settings.route, asgi_app(settings.read_only, config=config))
    log.info("sandboxrunner dashboard mounted at %s (%s)", settings.route,
             "read-only" if settings.read_only else "with actions")


lifespan: Lifespan = make_lifespan()
