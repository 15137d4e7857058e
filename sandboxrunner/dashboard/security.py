"""Who may see the dashboard and how a POST proves it came from its own page: the guard
in front of every route (basic auth, the ``authorize`` hook, read-only), the CSRF token,
and the response headers every answer carries. The model is in the package docstring.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "sr_csrf"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD"})
# no inline script or style, nothing from elsewhere: a value that escaped its escaping
# still could not run
HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

Authorize = Callable[[Request], "bool | Awaitable[bool]"]


def basic_auth_ok(request: Request, credentials: tuple[str, str]) -> bool:
    """Whether REQUEST carries CREDENTIALS (user, password) as HTTP basic auth."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    # both compared whatever the first gives, so the time taken tells nothing
    user_ok = hmac.compare_digest(user.encode(), credentials[0].encode())
    password_ok = hmac.compare_digest(password.encode(), credentials[1].encode())
    return user_ok and password_ok


def csrf_token(request: Request) -> str:
    """The token this browser's forms carry: its cookie's, or a new one (set by
    `set_csrf_cookie` on the response)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    return token if len(token) >= 32 else secrets.token_urlsafe(32)


def set_csrf_cookie(response: Response, request: Request, token: str) -> None:
    if request.cookies.get(CSRF_COOKIE) != token:
        path = request.scope.get("root_path", "") or "/"
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path=path,
                            secure=request.url.scheme == "https")


def csrf_ok(request: Request, form_token: Any) -> bool:
    """Whether a POST carries this browser's token in its form and comes from this host."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if len(cookie) < 32 or not isinstance(form_token, str):
        return False
    if not hmac.compare_digest(cookie.encode(), form_token.encode()):
        return False
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host", "")


class Guard:
    """ASGI middleware in front of every route: basic auth (401), the authorize hook
    (403), read-only (403 for anything but GET and HEAD), and HEADERS on every answer."""

    def __init__(self, app: ASGIApp, *, read_only: bool, authorize: Authorize | None,
                 basic_auth: tuple[str, str] | None) -> None:
        self.app, self.read_only = app, read_only
        self.authorize, self.basic_auth = authorize, basic_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(Request(scope))
        send = _with_headers(send)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refusal(self, request: Request) -> Response | None:
        if self.basic_auth is not None and not basic_auth_ok(request, self.basic_auth):
            return PlainTextResponse("sign in to see the sandboxrunner dashboard", 401,
                                     {"www-authenticate": 'Basic realm="sandboxrunner"'})
        if self.authorize is not None:
            allowed = self.authorize(request)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                return PlainTextResponse("not allowed to see the sandboxrunner dashboard", 403)
        if self.read_only and request.method not in SAFE_METHODS:
            return PlainTextResponse("the dashboard is read-only: it takes no actions", 403)
        return None


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(k.encode(), v.encode()) for k, v in HEADERS.items()
                     if k.encode() not in present]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sending
