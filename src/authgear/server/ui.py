"""Server-rendered pages: shared rendering, security headers and CSRF (security/csrf.py)."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authgear.server.security import csrf, password_policy
from authgear.server.state import ServerState

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on our own
    # form posts, and the CSRF origin check needs the real origin. Nothing leaves our origin.
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        # The passkey ceremony (/static/passkey.js) is the only script; it fetches its options
        # from this origin.
        "script-src 'self'; connect-src 'self'; base-uri 'none'"
    ),
}


def _nonce(state: ServerState, request: Request) -> str | None:
    existing = request.cookies.get(csrf.cookie_name(state.config.secure_cookies))
    return existing if existing and 20 <= len(existing) <= 100 else None


def _binding(state: ServerState, request: Request) -> str:
    return csrf.binding(
        request.query_params.get("flow"), request.cookies.get(state.config.session.cookie_name)
    )


def csrf_token(state: ServerState, request: Request) -> str:
    """The token for this page's forms; render() sets the nonce cookie when it is new."""
    nonce = _nonce(state, request)
    if nonce is None:
        nonce = getattr(request.state, "new_csrf", None)
        if nonce is None:
            nonce = secrets.token_urlsafe(32)
            request.state.new_csrf = nonce
    return csrf.token(state.csrf_key, nonce, _binding(state, request))


def csrf_token_for_flow(state: ServerState, request: Request, flow_id: str) -> str:
    """A token for the pages of a flow this request started (its id is not in this URL)."""
    nonce = _nonce(state, request) or getattr(request.state, "new_csrf", None)
    if nonce is None:
        nonce = secrets.token_urlsafe(32)
        request.state.new_csrf = nonce
    return csrf.token(state.csrf_key, nonce, csrf.binding(flow_id, None))


def csrf_ok(state: ServerState, request: Request, submitted: str | None) -> bool:
    """A state-changing POST of the pages: from our own origin, with a token bound to this
    browser's session or login flow."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if not csrf.same_origin(request.headers, {state.issuer, own}):
        return False
    return csrf.token_ok(
        state.csrf_key, _nonce(state, request), _binding(state, request), submitted
    )


def render(
    state: ServerState,
    request: Request,
    template: str,
    context: dict[str, Any],
    status: int = 200,
) -> Response:
    ctx = {
        "app_name": state.config.app_name,
        "csrf_token": csrf_token(state, request),
        # For the sign-up, settings and home pages (accounts: policy hints, verification).
        "verification": state.config.verification,
        "forgot_password": state.config.forgot_password.enabled,
        "password_rules": password_policy.hints(state.config.password_policy),
        **context,
    }
    response = state.templates.TemplateResponse(
        request, template, ctx, status_code=status, headers=PAGE_HEADERS
    )
    set_csrf_cookie(state, request, response)
    return response


def set_csrf_cookie(state: ServerState, request: Request, response: Response) -> None:
    """Set the CSRF nonce cookie when this request created it."""
    new = getattr(request.state, "new_csrf", None)
    if new:
        secure = state.config.secure_cookies
        response.set_cookie(
            csrf.cookie_name(secure),
            new,
            path="/",
            httponly=True,
            samesite="strict",
            secure=secure,
        )


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
