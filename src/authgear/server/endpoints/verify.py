"""Email verification page (/verify-email): a signed-in user verifies their address (the
settings' "verify" action, ``verification: optional``), and the mailed link lands here. A
verified address is what the ``email_verified`` claim (OpenID Connect Core §5.1) reports.

Authgear parity (spec §5.2): a 6-digit code valid 5 minutes, resent at most once a minute; we
also mail a link (``/verify-email?code=<32 characters>``). Opening the link shows a button: a
GET never spends it, so mail scanners that fetch links cannot.

With ``verification: required`` the sign-in itself holds an unverified user: that is the
sign-in flow's ``verify_email`` step (signin/steps/verify_email.py), whose "continue" button
carries on once the link was opened here.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authgear.server.accounts import AccountError
from authgear.server.http import OAuthError, client_ip, read_form
from authgear.server.sessions import session_from_cookie
from authgear.server.state import ServerState, get_state
from authgear.server.storage import User
from authgear.server.ui import csrf_ok, error_page, render

VERIFIED = "Your email address is verified."


def _ip(state: ServerState, request: Request) -> str | None:
    return client_ip(request, state.config.trusted_proxies)


def _page(
    state: ServerState,
    request: Request,
    *,
    email: str,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        state,
        request,
        "verify_email.html",
        {
            "email": email,
            "action": "/verify-email",
            "error": error,
            "notice": notice,
            "minutes": state.config.verification_code_lifetime // 60,
            "pending": False,
        },
        status,
    )


async def _signed_in(state: ServerState, request: Request) -> User | Response:
    signed_in = await session_from_cookie(state, request)
    if signed_in is None:
        return RedirectResponse(f"/login?{urlencode({'next': '/verify-email'})}", status_code=303)
    return signed_in[1]


async def verify_email_page(request: Request) -> Response:
    """GET: the code form (or, with ``?code=``, the link's confirmation button). POST: a code,
    a link token, or "send a new code"."""
    state = get_state(request)
    if state.config.verification == "off":
        return error_page(state, request, "Email verification is turned off.", 404)
    token = request.query_params.get("code")
    if token is not None and request.method == "GET":
        return await _link_page(state, request, token)
    if request.method == "GET":
        user = await _signed_in(state, request)
        if isinstance(user, Response):
            return user
        if user.email_verified:
            return _page(state, request, email=user.email, notice=VERIFIED)
        resend_failed = request.query_params.get("sent") == "0"
        notice = None if resend_failed else f"We sent a code to {user.email}."
        error = (
            "We could not send a new code just now; use the last one." if resend_failed else None
        )
        return _page(state, request, email=user.email, notice=notice, error=error)
    return await _submit(state, request)


async def _link_page(state: ServerState, request: Request, token: str) -> Response:
    found = await state.accounts.link_ref("verify_email", token)
    if found is None:
        return error_page(
            state, request, "This link is not valid or has expired. Ask for a new code.", 400
        )
    return render(
        state,
        request,
        "verify_link.html",
        {"email": found[1].target, "token": token, "action": "/verify-email"},
    )


async def _submit(state: ServerState, request: Request) -> Response:
    try:
        form = await read_form(request)
    except OAuthError:
        return error_page(state, request, "The form could not be read.", 400)
    if not csrf_ok(state, request, form.get("csrf_token")):
        return error_page(state, request, "Your session expired. Please try again.", 403)
    if form.get("token"):
        return await _submit_link(state, request, form["token"])
    user = await _signed_in(state, request)
    if isinstance(user, Response):
        return user
    try:
        if form.get("action") == "resend":
            sent = await state.accounts.send_verification(user, _ip(state, request))
            return _page(
                state, request, email=user.email, notice=f"We sent a new code to {sent.target}."
            )
        user = await state.accounts.verify_with_code(
            user, form.get("code", ""), _ip(state, request)
        )
    except AccountError as e:
        return _page(state, request, email=user.email, error=e.message, status=e.status)
    return RedirectResponse("/settings/account?done=verified", status_code=303)


async def _submit_link(state: ServerState, request: Request, token: str) -> Response:
    try:
        user = await state.accounts.verify_with_link(token)
    except AccountError as e:
        return error_page(state, request, e.message, e.status)
    signed_in = await session_from_cookie(state, request)
    if signed_in is not None and signed_in[1].id == user.id:
        return RedirectResponse("/settings/account?done=verified", status_code=303)
    # A sign-in waiting on its verify_email step continues with its "continue" button.
    return render(state, request, "verify_done.html", {"email": user.email})
