"""Server-rendered pages: shared rendering, security headers and CSRF (double-submit cookie)."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authgear.server.state import ServerState

CSRF_COOKIE = "authgear_csrf"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
}


def csrf_token(request: Request) -> str:
    """The request's CSRF token (from its cookie), or a new one that render() will set."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 100:
        return existing
    token: str | None = getattr(request.state, "new_csrf", None)
    if token is None:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


def csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(cookie.encode(), submitted.encode())


def render(
    state: ServerState,
    request: Request,
    template: str,
    context: dict[str, Any],
    status: int = 200,
) -> Response:
    ctx = {"app_name": state.config.app_name, "csrf_token": csrf_token(request), **context}
    response = state.templates.TemplateResponse(
        request, template, ctx, status_code=status, headers=PAGE_HEADERS
    )
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(
            CSRF_COOKIE,
            new,
            path="/",
            httponly=True,
            samesite="strict",
            secure=state.config.secure_cookies,
        )
    return response


def error_page(state: ServerState, request: Request, message: str, status: int) -> Response:
    return render(state, request, "error.html", {"message": message}, status)


def busy_page(state: ServerState, request: Request, retry_after: int) -> Response:
    """Password checks are all taken (see passwords.HashingGate): 503, and when to retry."""
    response = error_page(
        state,
        request,
        "Too many sign-ins are being checked right now. Wait a few seconds and try again.",
        503,
    )
    response.headers["Retry-After"] = str(retry_after)
    return response
