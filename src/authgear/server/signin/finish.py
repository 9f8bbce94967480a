"""Finishing a sign-in flow: one function for every starter.

The flow is taken (deleted at the revision read: of two concurrent finishes one wins), the
``amr`` of its steps collected, and then the browser session is created, or, for a
reauthentication of this browser's session, refreshed (``authenticated_at`` now, ``amr``
replaced: Authgear's ``Provider.Reauthenticate``). A "trust this device" choice gets its
cookie. Finally the starter gets the user back: an authorization request its code, a ``next``
path its redirect, a settings action its page, a device approval (RFC 8628) its decision
recorded with the browser session (a code entered while signed in uses that session, which
must still be this browser's).
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response

from authgear.server import device_flow, events
from authgear.server.authorization import MFA_ACR, complete
from authgear.server.security.otp import device_token_hash, new_device_token
from authgear.server.sessions import (
    create_idp_session,
    now_s,
    session_from_cookie,
    set_session_cookie,
)
from authgear.server.signin.amr import collect_amr, multi_factor
from authgear.server.signin.flow import SETTINGS
from authgear.server.signin.steps.approve_device import APPROVE, DECISION, SIGNED_OUT
from authgear.server.signin.steps.base import StepContext
from authgear.server.storage import IdpSession, User
from authgear.server.ui import error_page, render

DEVICE_COOKIE = "mfa_device_token"
ALREADY_DONE = "This sign-in has already finished. Go back to the app and start again."


async def finish(ctx: StepContext) -> Response:
    state, request, flow = ctx.state, ctx.request, ctx.flow
    if flow.saved and not await state.repo.take_flow(flow.id, flow.rev):
        return error_page(state, request, ALREADY_DONE, 409)
    user = await state.repo.get_user(flow.user_id) if flow.user_id else None
    if user is None or user.disabled:
        return error_page(state, request, ALREADY_DONE, 400)
    now = now_s()
    amr = collect_amr(flow.steps)
    authenticated = any(s.authenticator is not None for s in flow.steps)
    session: IdpSession | None = None
    cookie: str | None = None
    if flow.reauth_session is not None:
        found = await session_from_cookie(state, request)
        if (
            found is not None
            and found[0].id == flow.reauth_session
            and found[1].id == user.id
            and (
                not authenticated
                or await state.repo.reauthenticate_session(found[0].id, user.id, now, amr)
            )
        ):
            session = found[0]
            if authenticated:
                session = replace(session, authenticated_at=now, amr=amr)
    elif flow.starter.get("session"):
        found = await session_from_cookie(state, request)
        if found is None or found[0].id != flow.starter["session"] or found[1].id != user.id:
            return error_page(state, request, SIGNED_OUT, 400)
        session = found[0]
    if flow.intent == SETTINGS:
        action = str(flow.starter.get("action", ""))
        response: Response = RedirectResponse(
            f"/settings/security?{urlencode({'done': action})}", status_code=303
        )
    else:
        if session is None:
            session, cookie = await create_idp_session(state, request, user, amr)
        if authenticated:
            await state.repo.set_last_login(user.id, now)
            events.sign_in(request, user.id)
        response = await _hand_back(ctx, session, user, amr)
    if cookie is not None:
        set_session_cookie(state, response, cookie)
    if flow.scratch.get("trust_device"):
        await _trust_device(ctx, user.id, response)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _hand_back(ctx: StepContext, session: IdpSession, user: User, amr: list[str]) -> Response:
    flow = ctx.flow
    if flow.device_approval is not None:
        return await _hand_back_device(ctx, session, user)
    req = flow.authorization
    if req is None:
        target = flow.starter.get("next") or "/"
        return RedirectResponse(str(target), status_code=303)
    acr = MFA_ACR if MFA_ACR in req.acr_values and multi_factor(amr) else None
    return await complete(ctx.state, req, session, user, acr=acr, reauth_grant_id=flow.reauth_grant)


async def _hand_back_device(ctx: StepContext, session: IdpSession, user: User) -> Response:
    """Record the approval or denial of the device's code (once: a code decided in another
    tab, or expired meanwhile, is not decided again) and say what happened."""
    approve = ctx.flow.scratch.get(DECISION) == APPROVE
    ok = await device_flow.settle(
        ctx.state,
        ctx.request,
        ctx.flow.device_approval or "",
        approve=approve,
        session=session,
        user=user,
    )
    page = {"approved": approve, "ok": ok}
    return render(ctx.state, ctx.request, "device_done.html", page, 200 if ok else 409)


async def _trust_device(ctx: StepContext, user_id: str, response: Response) -> None:
    """ "Trust this device": a random cookie whose hash is stored for the user; while it is
    valid the second factor is skipped on this browser (amr ``x_device_token``, no ``mfa``)."""
    cfg = ctx.state.config.authentication.device_token
    if cfg.disabled:
        return
    token = new_device_token()
    digest = device_token_hash(token)
    assert digest is not None
    now = now_s()
    max_age = cfg.expire_in_days * 86400
    await ctx.state.authenticators.add_device_token(digest, user_id, now, now + max_age)
    response.set_cookie(
        DEVICE_COOKIE,
        token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=ctx.state.config.secure_cookies,
    )
