"""Forgot password (/forgot-password) and reset (/reset-password), from the login page.

Authgear parity (spec §5.1): an emailed 6-digit code and a 32-character link, single use; here
both are in one mail and valid 15 minutes (``forgot_password.lifetime``; Authgear: link 20, code
5). The answer to "send me a code" is the same page whether or not the address has an account,
after the same work (accounts.AccountService.request_reset). Opening the link shows the form
(GET spends nothing: mail scanners fetch links); the code or link is spent by the POST that sets
the new password, atomically with it. A reset ends the user's sessions when configured (beyond
Authgear; their refresh tokens with them, as RFC 9700 §4.14.2 suggests on a password change) and
mails a notice.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authgear.server.account_rules import normalize_email, safe_next
from authgear.server.accounts import AccountError, PolicyViolated
from authgear.server.http import OAuthError, client_ip, read_form
from authgear.server.security import password_policy
from authgear.server.state import ServerState, get_state
from authgear.server.ui import csrf_ok, error_page, render

BAD_LINK = "This link is not valid or has expired. Ask for a new one."


def _back_query(request: Request) -> str:
    """The sign-in this recovery started from: an OAuth flow or a ``next`` path."""
    flow_id = request.query_params.get("flow")
    if flow_id and len(flow_id) <= 100:
        return "?" + urlencode({"flow": flow_id})
    next_url = safe_next(request.query_params.get("next"))
    return "?" + urlencode({"next": next_url}) if next_url else ""


def _forgot_page(
    state: ServerState,
    request: Request,
    *,
    email: str = "",
    error: str | None = None,
    status: int = 200,
) -> Response:
    query = _back_query(request)
    return render(
        state,
        request,
        "forgot_password.html",
        {
            "action": f"/forgot-password{query}",
            "login": f"/login{query}",
            "email": email,
            "error": error,
        },
        status,
    )


def _reset_page(
    state: ServerState,
    request: Request,
    *,
    email: str = "",
    token: str | None = None,
    error: str | None = None,
    status: int = 200,
    minutes: int | None = None,
) -> Response:
    query = _back_query(request)
    return render(
        state,
        request,
        "reset_password.html",
        {
            "action": f"/reset-password{query}",
            "again": f"/forgot-password{query}",
            "email": email,
            "token": token,
            "error": error,
            "minutes": minutes or state.config.forgot_password.lifetime // 60,
            "rules": password_policy.hints(state.config.password_policy),
        },
        status,
    )


async def _form(state: ServerState, request: Request) -> dict[str, str] | Response:
    try:
        form = await read_form(request)
    except OAuthError:
        return error_page(state, request, "The form could not be read.", 400)
    if not csrf_ok(state, request, form.get("csrf_token")):
        return error_page(state, request, "Your session expired. Please try again.", 403)
    return form


async def forgot_password_page(request: Request) -> Response:
    state = get_state(request)
    if not state.config.forgot_password.enabled:
        return error_page(
            state, request, "Password reset is turned off. Ask an administrator.", 404
        )
    if request.method == "GET":
        return _forgot_page(state, request, email=request.query_params.get("email", "")[:320])
    form = await _form(state, request)
    if isinstance(form, Response):
        return form
    raw = form.get("email", "")
    email = normalize_email(raw)
    if email is None:
        return _forgot_page(
            state, request, email=raw[:320], error="Enter a valid email address.", status=400
        )
    try:
        sent = await state.accounts.request_reset(
            email, client_ip(request, state.config.trusted_proxies)
        )
    except AccountError as e:
        return _forgot_page(state, request, email=email, error=e.message, status=e.status)
    return _reset_page(state, request, email=email, minutes=sent.minutes)


async def reset_password_page(request: Request) -> Response:
    """GET ``?code=<link token>``: the new-password form for a link. POST: a new password with
    the emailed code (and address) or the link token."""
    state = get_state(request)
    if not state.config.forgot_password.enabled:
        return error_page(
            state, request, "Password reset is turned off. Ask an administrator.", 404
        )
    if request.method == "GET":
        token = request.query_params.get("code", "")
        found = await state.accounts.link_ref("reset_password", token) if token else None
        if found is None:
            return error_page(state, request, BAD_LINK, 400)
        return _reset_page(state, request, email=found[1].target, token=token)
    form = await _form(state, request)
    if isinstance(form, Response):
        return form
    return await _reset(state, request, form)


async def _reset(state: ServerState, request: Request, form: dict[str, str]) -> Response:
    token = form.get("token") or None
    email = normalize_email(form.get("email", "")) if not token else None
    shown_email = form.get("email", "")[:320]
    password = form.get("password", "")
    if password != form.get("password_confirm", ""):
        return _reset_page(
            state,
            request,
            email=shown_email,
            token=token,
            error="The two passwords are not the same.",
            status=400,
        )
    try:
        await state.accounts.reset_password(
            email=email,
            code=form.get("code"),
            token=token,
            password=password,
            ip=client_ip(request, state.config.trusted_proxies),
        )
    except PolicyViolated as e:
        return _reset_page(
            state, request, email=shown_email, token=token, error=e.message, status=400
        )
    except AccountError as e:
        if token:
            return error_page(
                state, request, BAD_LINK if e.kind == "invalid_code" else e.message, e.status
            )
        return _reset_page(state, request, email=shown_email, error=e.message, status=e.status)
    return RedirectResponse(f"/reset-password/done{_back_query(request)}", status_code=303)


async def reset_done_page(request: Request) -> Response:
    state = get_state(request)
    return render(
        state,
        request,
        "reset_done.html",
        {
            "login": f"/login{_back_query(request)}",
            "ended": state.config.password_change_ends_sessions,
        },
    )
