"""Email verification pages (/verify-email) and the sign-in gate of ``verification: required``.

Authgear parity (spec §5.2): a 6-digit code valid 5 minutes, resent at most once a minute; we
also mail a link (``/verify-email?code=<32 characters>``). Opening the link shows a button: a
GET never spends it, so mail scanners that fetch links cannot.

In ``required`` mode an unverified user who signed up or signed in is held before the browser
session is made: :func:`verification_gate` stores a *pending sign-in* (a login-flow row holding
the user, the OAuth flow or ``next`` it came from, and the hash of a secret), sets that secret
in a cookie, mails a code and redirects to ``/verify-email?flow=<pending id>``. The right code
(or the link, opened in the same browser) continues the sign-in where it stopped. The cookie binds
the pending sign-in to the browser: a pending URL sent to someone else is worthless without it.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authgear.server.accounts import AccountError, CodeInvalid, TooMany
from authgear.server.endpoints.authorize import (
    FLOW_LIFETIME,
    AuthorizationRequest,
    complete,
    redirect_uri_allowed,
)
from authgear.server.http import OAuthError, client_ip, read_form
from authgear.server.sessions import (
    create_idp_session,
    now_s,
    session_from_cookie,
    set_session_cookie,
)
from authgear.server.state import ServerState, get_state
from authgear.server.storage import User
from authgear.server.tokens import new_secret, sha256_hex, split_compound
from authgear.server.ui import csrf_ok, error_page, render

PENDING_KIND = "verify_email"
PENDING_COOKIE = "authgear_verify"
EXPIRED = "This verification page has expired. Sign in again to get a new code."
VERIFIED = "Your email address is verified."


def _ip(state: ServerState, request: Request) -> str | None:
    return client_ip(request, state.config.trusted_proxies)


# -- the gate ---------------------------------------------------------------------------------


async def verification_gate(
    state: ServerState,
    request: Request,
    flow_id: str | None,
    user: User,
    next_url: str | None = None,
) -> Response | None:
    """None when the user may be signed in now; else the redirect to the verify page (a code
    is mailed unless one was sent within the cooldown)."""
    if state.config.verification != "required" or user.email_verified:
        return None
    pending_id, secret = new_secret(), new_secret()
    now = now_s()
    data = {
        "kind": PENDING_KIND,
        "user_id": user.id,
        "flow_id": flow_id,
        "next": next_url,
        "secret_hash": sha256_hex(secret),
    }
    await state.repo.add_flow(pending_id, data, now, now + FLOW_LIFETIME)
    sent = True
    try:
        await state.accounts.send_verification(user, _ip(state, request))
    except TooMany:
        sent = False  # the last code still works; the page offers to send another
    query = urlencode({"flow": pending_id, **({} if sent else {"sent": "0"})})
    response = RedirectResponse(f"/verify-email?{query}", status_code=303)
    response.set_cookie(
        PENDING_COOKIE,
        f"{pending_id}.{secret}",
        max_age=FLOW_LIFETIME,
        path="/",
        httponly=True,
        samesite="lax",
        secure=state.config.secure_cookies,
    )
    return response


async def _pending(
    state: ServerState, request: Request, pending_id: str
) -> tuple[dict[str, Any], User] | None:
    """The pending sign-in ``pending_id``, if this browser holds its cookie."""
    parts = split_compound(request.cookies.get(PENDING_COOKIE, ""))
    if parts is None or parts[0] != pending_id or len(pending_id) > 100:
        return None
    data = await state.repo.get_flow(pending_id, now_s())
    if data is None or data.get("kind") != PENDING_KIND:
        return None
    if not hmac.compare_digest(str(data.get("secret_hash", "")), sha256_hex(parts[1])):
        return None
    user = await state.repo.get_user(str(data.get("user_id", "")))
    if user is None or user.disabled:
        return None
    return data, user


async def _oauth_flow(state: ServerState, flow_id: str) -> AuthorizationRequest | None:
    data = await state.repo.get_flow(flow_id, now_s())
    if data is None:
        return None
    try:
        flow = AuthorizationRequest.from_json(data)
    except TypeError:
        return None
    client = state.config.client(flow.client_id)
    if client is None or not redirect_uri_allowed(client, flow.redirect_uri):
        return None
    return flow


async def _continue_sign_in(
    state: ServerState, request: Request, pending_id: str, data: dict[str, Any], user: User
) -> Response:
    """The sign-in the gate held, now that the address is verified: the browser session,
    then back to the app (OAuth flow) or to ``next``."""
    await state.repo.delete_flow(pending_id)
    session, cookie = await create_idp_session(state, request, user, ["pwd"])
    await state.repo.set_last_login(user.id, now_s())
    flow_id = data.get("flow_id")
    if flow_id:
        flow = await _oauth_flow(state, str(flow_id))
        if flow is None:
            response = error_page(
                state,
                request,
                "Your email address is verified and you are signed in, but the app's sign-in "
                "request has expired. Go back to the app and sign in again.",
                400,
            )
        else:
            await state.repo.delete_flow(str(flow_id))
            response = await complete(state, flow, session, user)
    else:
        response = RedirectResponse(str(data.get("next") or "/"), status_code=303)
    set_session_cookie(state, response, cookie)
    response.delete_cookie(
        PENDING_COOKIE, path="/", httponly=True, samesite="lax", secure=state.config.secure_cookies
    )
    return response


# -- the page ---------------------------------------------------------------------------------


def _page(
    state: ServerState,
    request: Request,
    *,
    email: str,
    pending_id: str | None,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    query = f"?{urlencode({'flow': pending_id})}" if pending_id else ""
    return render(
        state,
        request,
        "verify_email.html",
        {
            "email": email,
            "action": f"/verify-email{query}",
            "error": error,
            "notice": notice,
            "minutes": state.config.verification_code_lifetime // 60,
            "pending": pending_id is not None,
        },
        status,
    )


async def _who(
    state: ServerState, request: Request
) -> tuple[str | None, dict[str, Any] | None, User] | Response:
    """Whose address this page verifies: a pending sign-in (``?flow=``) or the signed-in user."""
    pending_id = request.query_params.get("flow")
    if pending_id:
        found = await _pending(state, request, pending_id)
        if found is None:
            return error_page(state, request, EXPIRED, 400)
        return pending_id, found[0], found[1]
    signed_in = await session_from_cookie(state, request)
    if signed_in is None:
        return RedirectResponse(f"/login?{urlencode({'next': '/verify-email'})}", status_code=303)
    return None, None, signed_in[1]


async def verify_email_page(request: Request) -> Response:
    """GET: the code form (or, with ``?code=``, the link's confirmation button). POST: a code,
    a link token, "send a new code", or "continue" (verified meanwhile with the link)."""
    state = get_state(request)
    if state.config.verification == "off":
        return error_page(state, request, "Email verification is turned off.", 404)
    token = request.query_params.get("code")
    if token is not None and request.method == "GET":
        return await _link_page(state, request, token)
    if request.method == "GET":
        who = await _who(state, request)
        if isinstance(who, Response):
            return who
        pending_id, _, user = who
        if user.email_verified and pending_id is None:
            return _page(state, request, email=user.email, pending_id=None, notice=VERIFIED)
        resend_failed = request.query_params.get("sent") == "0"
        notice = None if resend_failed else f"We sent a code to {user.email}."
        error = (
            "We could not send a new code just now; use the last one." if resend_failed else None
        )
        return _page(
            state, request, email=user.email, pending_id=pending_id, notice=notice, error=error
        )
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
    who = await _who(state, request)
    if isinstance(who, Response):
        return who
    pending_id, data, user = who
    action = form.get("action", "verify")
    try:
        if action == "resend":
            sent = await state.accounts.send_verification(user, _ip(state, request))
            return _page(
                state,
                request,
                email=user.email,
                pending_id=pending_id,
                notice=f"We sent a new code to {sent.target}.",
            )
        if action == "continue":
            if not user.email_verified:
                raise CodeInvalid(
                    "Your address is not verified yet. Enter the code from the email."
                )
        else:
            user = await state.accounts.verify_with_code(
                user, form.get("code", ""), _ip(state, request)
            )
    except AccountError as e:
        return _page(
            state,
            request,
            email=user.email,
            pending_id=pending_id,
            error=e.message,
            status=e.status,
        )
    if pending_id is not None and data is not None:
        return await _continue_sign_in(state, request, pending_id, data, user)
    return RedirectResponse("/settings/account?done=verified", status_code=303)


async def _submit_link(state: ServerState, request: Request, token: str) -> Response:
    try:
        user = await state.accounts.verify_with_link(token)
    except AccountError as e:
        return error_page(state, request, e.message, e.status)
    # Opened in the browser that is signing up: carry on with that sign-in.
    parts = split_compound(request.cookies.get(PENDING_COOKIE, ""))
    if parts is not None:
        found = await _pending(state, request, parts[0])
        if found is not None and found[1].id == user.id:
            return await _continue_sign_in(state, request, parts[0], found[0], user)
    signed_in = await session_from_cookie(state, request)
    if signed_in is not None and signed_in[1].id == user.id:
        return RedirectResponse("/settings/account?done=verified", status_code=303)
    return render(
        state,
        request,
        "verify_done.html",
        {"email": user.email},
    )
