"""`sandboxrunner dashboard`: the web dashboard (sandboxrunner.dashboard) served on its own
by uvicorn, for teams that do not mount it in their app.

It binds 127.0.0.1 unless told otherwise. A bind to any other address needs basic-auth
credentials (``user`` and ``password`` in ``[tool.sandboxrunner.dashboard]``, or
SANDBOXRUNNER_DASHBOARD_USER and SANDBOXRUNNER_DASHBOARD_PASSWORD): without them it refuses
to start (exit 3), naming --allow-no-auth, for a proxy in front that authenticates.
Read-only unless ``read_only = false`` or --actions. Like `top` it only reads the
configured Redis or the project's running embedded server, and never starts one (exit 4).
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
from dataclasses import replace

import typer

from . import errors
from .cli_support import (
    PROJECT_OPTION,
    REDIS_URL_OPTION,
    existing_redis_url,
    load_cli_config,
    reports_errors,
)
from .config import redact_url
from .dashboard_config import PASSWORD_ENV, TABLE, USER_ENV, load_dashboard_config

DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    """Whether HOST is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _unauthenticated(host: str, port: int) -> errors.ConfigError:
    return errors.ConfigError(
        f"refusing to serve the dashboard on {host} without authentication: anyone "
        f"reaching {host}:{port} would see every job's data; set {USER_ENV} and "
        f"{PASSWORD_ENV} (or user and password in {TABLE}), or pass --allow-no-auth "
        f"if a proxy in front authenticates")


@reports_errors
def dashboard(
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS",
                             help="Address to bind. Anything but loopback needs basic auth "
                                  "(or --allow-no-auth)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, metavar="PORT",
                             help="Port to listen on."),
    read_only: bool = typer.Option(None, "--read-only/--actions",
                                   help="Offer no actions (the default), or offer cancel, "
                                        "retry, delete, pause, resume and run a cron job "
                                        "now. Default: [tool.sandboxrunner"
                                        ".dashboard] read_only, else read-only."),
    allow_no_auth: bool = typer.Option(False, "--allow-no-auth",
                                       help="Serve a non-loopback address without basic auth "
                                            "(a proxy in front authenticates)."),
    redis_url: str = REDIS_URL_OPTION,
    project: str = PROJECT_OPTION,
) -> None:
    """Serve the web dashboard: queues, supervisors, jobs, live.

    Ctrl-C or SIGTERM stops it. It never starts the embedded server."""
    config = load_cli_config(project, redis_url=redis_url)
    settings = load_dashboard_config(config.project_dir)
    auth = settings.basic_auth()
    if auth is None and not allow_no_auth and not is_loopback(host):
        raise _unauthenticated(host, port)
    url = existing_redis_url(config, "dashboard")
    from .dashboard import asgi_app

    read_only = settings.read_only if read_only is None else read_only
    app = asgi_app(read_only, basic_auth=auth, config=replace(config, redis_url=url))
    typer.echo(f"sandboxrunner dashboard on http://{host}:{port}/ "
               f"({'read-only' if read_only else 'with actions'}"
               f"{', basic auth' if auth else ''}), Redis {redact_url(url)}")
    listening = _listen(host, port)
    import uvicorn

    # uvicorn stops gracefully on SIGTERM, then raises it again: exit 0, as `start` does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(errors.EXIT_OK))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[listening])


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to HOST:PORT, before anything is served: a port in use is our
    error line, not uvicorn's log and exit 1."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise errors.ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                                 f"pick another --port (or --host)") from exc
    return sock
