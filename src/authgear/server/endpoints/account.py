"""The user's own settings: the index (/settings) and "Password and email" (/settings/account):
change the password (the current one first, counted like a sign-in), change the email (a code
to the new address before it takes effect, a notice to the old one), and verify the email.

Every change is a POST with a session-bound CSRF token (security/csrf.py); the pages need the
browser session of the login page. A changed or verified address is what the ``email`` and
``email_verified`` claims (OpenID Connect Core §5.1) carry from then on; a password change ends
the user's other sessions and their refresh tokens when configured (RFC 9700 §4.14.2 names a
password change as such a security event).
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from authgear.server.account_rules import normalize_email
from authgear.server.accounts import AccountError
from authgear.server.endpoints.recovery import (
    forgot_password_page,
    reset_done_page,
    reset_password_page,
)
from authgear.server.endpoints.verify import verify_email_page
from authgear.server.http import OAuthError, client_ip, read_form
from authgear.server.sessions import session_from_cookie
from authgear.server.state import ServerState, get_state
from authgear.server.storage import IdpSession, User
from authgear.server.ui import csrf_ok, error_page, render

DONE = {
    "password": "Your password was changed.",
    "password-others": "Your password was changed, and you were signed out everywhere else.",
    "email": "Your email address was changed.",
    "verified": "Your email address is verified.",
    "code-sent": "We sent a code to the new address. Enter it below to confirm the change.",
}


def _login(path: str) -> Response:
    return RedirectResponse(f"/login?{urlencode({'next': path})}", status_code=303)


async def settings_page(request: Request) -> Response:
    state = get_state(request)
    found = await session_from_cookie(state, request)
    if found is None:
        return _login("/settings")
    return render(state, request, "settings.html", {"me": found[1]})


async def _account_page(
    state: ServerState,
    request: Request,
    me: User,
    *,
    error: str | None = None,
    error_for: str | None = None,
    status: int = 200,
    new_email: str = "",
) -> Response:
    done = DONE.get(request.query_params.get("done", ""))
    pending = await state.accounts.pending_email_change(me)
    return render(
        state,
        request,
        "settings_account.html",
        {
            "me": me,
            "done": done,
            "error": error,
            "error_for": error_for,
            "new_email": new_email,
            "pending_email": pending,
        },
        status,
    )


async def account_page(request: Request) -> Response:
    state = get_state(request)
    found = await session_from_cookie(state, request)
    if found is None:
        return _login("/settings/account")
    return await _account_page(state, request, found[1])


async def _posted(
    request: Request,
) -> tuple[ServerState, IdpSession, User, dict[str, str]] | Response:
    state = get_state(request)
    found = await session_from_cookie(state, request)
    if found is None:
        return _login("/settings/account")
    try:
        form = await read_form(request)
    except OAuthError:
        return error_page(state, request, "The form could not be read.", 400)
    if not csrf_ok(state, request, form.get("csrf_token")):
        return error_page(state, request, "Your session expired. Please try again.", 403)
    return state, found[0], found[1], form


async def change_password(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    state, session, me, form = posted
    new = form.get("new_password", "")
    if new != form.get("new_password_confirm", ""):
        return await _account_page(
            state,
            request,
            me,
            error="The two new passwords are not the same.",
            error_for="password",
            status=400,
        )
    try:
        result = await state.accounts.change_password(
            me,
            form.get("current_password", ""),
            new,
            ip=client_ip(request, state.config.trusted_proxies),
            keep_session=session.id,
        )
    except AccountError as e:
        return await _account_page(
            state, request, me, error=e.message, error_for="password", status=e.status
        )
    done = "password-others" if result.ended_sessions else "password"
    return RedirectResponse(f"/settings/account?done={done}", status_code=303)


async def change_email(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    state, _, me, form = posted
    raw = form.get("new_email", "")
    new_email = normalize_email(raw)
    if new_email is None:
        return await _account_page(
            state,
            request,
            me,
            error="Enter a valid email address.",
            error_for="email",
            status=400,
            new_email=raw[:320],
        )
    try:
        await state.accounts.request_email_change(
            me,
            new_email,
            form.get("password", ""),
            client_ip(request, state.config.trusted_proxies),
        )
    except AccountError as e:
        return await _account_page(
            state,
            request,
            me,
            error=e.message,
            error_for="email",
            status=e.status,
            new_email=new_email,
        )
    return RedirectResponse("/settings/account?done=code-sent#confirm-email", status_code=303)


async def confirm_email(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    state, _, me, form = posted
    try:
        await state.accounts.confirm_email_change(
            me, form.get("code", ""), client_ip(request, state.config.trusted_proxies)
        )
    except AccountError as e:
        return await _account_page(
            state, request, me, error=e.message, error_for="confirm", status=e.status
        )
    return RedirectResponse("/settings/account?done=email", status_code=303)


async def send_verification(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    state, _, me, _ = posted
    if state.config.verification == "off" or me.email_verified:
        return RedirectResponse("/settings/account", status_code=303)
    try:
        await state.accounts.send_verification(me, client_ip(request, state.config.trusted_proxies))
    except AccountError as e:
        return await _account_page(
            state, request, me, error=e.message, error_for="verify", status=e.status
        )
    return RedirectResponse("/verify-email", status_code=303)


def account_routes() -> list[BaseRoute]:
    """The routes of account recovery, verification and the settings pages."""
    return [
        Route("/forgot-password", forgot_password_page, methods=["GET", "POST"]),
        Route("/reset-password", reset_password_page, methods=["GET", "POST"]),
        Route("/reset-password/done", reset_done_page, methods=["GET"]),
        Route("/verify-email", verify_email_page, methods=["GET", "POST"]),
        Route("/settings", settings_page, methods=["GET"]),
        Route("/settings/account", account_page, methods=["GET"]),
        Route("/settings/account/password", change_password, methods=["POST"]),
        Route("/settings/account/email", change_email, methods=["POST"]),
        Route("/settings/account/email/confirm", confirm_email, methods=["POST"]),
        Route("/settings/account/verify", send_verification, methods=["POST"]),
    ]
