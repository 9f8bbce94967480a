"""/settings/security: the user's second factor (authenticator app, recovery codes, trusted
browsers) and passkeys; and a minimal /settings index.

Adding an authenticator app or a passkey is a sign-in flow with a settings starter (its steps
``enroll_totp`` + ``recovery_codes``, or ``create_passkey``). Every change needs a recent
sign-in (``authentication.settings_reauth_max_age``): an older session first confirms it is the
user (the ``reauth`` step and their second factor), so a stolen session cookie alone cannot
change how the account signs in. Every change is in the audit log (actor "self").
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from authgear.server.http import OAuthError, client_ip, read_form
from authgear.server.security.otp import (
    format_recovery_code,
    new_recovery_codes,
    recovery_code_hash,
)
from authgear.server.security.passkeys import relying_party
from authgear.server.sessions import now_s, session_from_cookie
from authgear.server.signin.engine import start_flow
from authgear.server.signin.flow import SETTINGS, new_flow
from authgear.server.signin.secrets import mfa_key
from authgear.server.state import ServerState, get_state
from authgear.server.storage import IdpSession, User
from authgear.server.storage.admin import Actor
from authgear.server.storage.authenticators import PASSKEY, RECOVERY_CODE, TOTP
from authgear.server.ui import csrf_ok, error_page, render

DONE_MESSAGES = {
    "add_totp": "Two-factor authentication is on.",
    "add_passkey": "The passkey was added.",
    "confirm": "Thanks for confirming it's you. You can make the change now.",
    "totp-removed": "The authenticator app was removed.",
    "passkey-removed": "The passkey was removed.",
    "devices-forgotten": "Every browser will ask for your second factor again.",
    "link_identity": "The account was linked. You can now sign in with it too.",
    "identity-unlinked": "The account was unlinked.",
}
MAX_ID = 100


async def _signed_in(state: ServerState, request: Request) -> tuple[IdpSession, User] | Response:
    found = await session_from_cookie(state, request)
    if found is None:
        target = request.url.path
        return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
    return found


def _actor(state: ServerState, request: Request, user: User) -> Actor:
    return Actor("self", user.id, user.email, client_ip(request, state.config.trusted_proxies))


async def security_page(request: Request) -> Response:
    state = get_state(request)
    found = await _signed_in(state, request)
    if isinstance(found, Response):
        return found
    return await _security(state, request, found[1])


async def _security(
    state: ServerState, request: Request, me: User, extra: dict[str, Any] | None = None
) -> Response:
    # settings_identities builds on this module's helpers: imported here, not at the top.
    from authgear.server.signin import settings_identities

    now = now_s()
    cfg = state.config.authentication
    authenticators = await state.authenticators.list_for_user(me.id)
    codes = [a for a in authenticators if a.kind == RECOVERY_CODE]
    context = {
        "me": me,
        "totp": [a for a in authenticators if a.kind == TOTP],
        "passkeys": [a for a in authenticators if a.kind == PASSKEY],
        "codes_left": sum(1 for a in codes if a.last_used_at is None),
        "codes_total": len(codes),
        "devices": await state.authenticators.count_device_tokens(me.id, now),
        "totp_enabled": cfg.totp,
        "passkeys_enabled": cfg.passkeys
        and relying_party(state.issuer, state.config.app_name) is not None,
        "recovery_enabled": not cfg.recovery_code.disabled,
        "done": DONE_MESSAGES.get(request.query_params.get("done", "")),
        "fmt_time": _date,
        **await settings_identities.section(state, me),
        **(extra or {}),
    }
    return render(state, request, "settings_security.html", context)


def _date(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else "never"


async def checked(
    request: Request,
) -> tuple[ServerState, IdpSession, User, dict[str, str]] | Response:
    """A signed-in user's POST with a valid CSRF token, and its form."""
    state = get_state(request)
    found = await _signed_in(state, request)
    if isinstance(found, Response):
        return found
    try:
        form = await read_form(request)
    except OAuthError:
        form = {}
    if not csrf_ok(state, request, form.get("csrf_token")):
        return error_page(state, request, "Your session expired. Please try again.", 403)
    return state, found[0], found[1], form


async def _checked(
    request: Request,
) -> tuple[ServerState, IdpSession, User] | Response:
    """A signed-in user's POST with a valid CSRF token."""
    result = await checked(request)
    return result if isinstance(result, Response) else result[:3]


def fresh(state: ServerState, session: IdpSession) -> bool:
    return _fresh(state, session)


async def confirm(
    state: ServerState, request: Request, session: IdpSession, user: User
) -> Response:
    """An old sign-in confirms it is the user first (then comes back to the settings)."""
    return await _action(state, request, session, user, "confirm")


def actor(state: ServerState, request: Request, user: User) -> Actor:
    return _actor(state, request, user)


def _fresh(state: ServerState, session: IdpSession) -> bool:
    age = now_s() - session.authenticated_at
    return 0 <= age <= state.config.authentication.settings_reauth_max_age


async def _action(
    state: ServerState, request: Request, session: IdpSession, user: User, action: str
) -> Response:
    """A settings flow: confirm it is the user if the sign-in is old, then the action's
    steps (none for "confirm")."""
    flow = new_flow(
        SETTINGS,
        {"kind": "settings", "action": action},
        now_s(),
        user_id=user.id,
        reauth_session=None if _fresh(state, session) else session.id,
    )
    return await start_flow(state, request, flow)


async def add_totp(request: Request) -> Response:
    checked = await _checked(request)
    if isinstance(checked, Response):
        return checked
    state, session, me = checked
    if not state.config.authentication.totp:
        return error_page(state, request, "Two-factor authentication is turned off.", 400)
    return await _action(state, request, session, me, "add_totp")


async def add_passkey(request: Request) -> Response:
    checked = await _checked(request)
    if isinstance(checked, Response):
        return checked
    state, session, me = checked
    cfg = state.config.authentication
    if not cfg.passkeys or relying_party(state.issuer, state.config.app_name) is None:
        return error_page(state, request, "Passkeys are not available on this server.", 400)
    return await _action(state, request, session, me, "add_passkey")


def _authenticator_id(request: Request) -> str | None:
    value = str(request.path_params.get("authenticator_id", ""))
    return value if 0 < len(value) <= MAX_ID else None


async def remove_authenticator(request: Request) -> Response:
    """POST /settings/security/{totp|passkeys}/{id}/remove."""
    checked = await _checked(request)
    if isinstance(checked, Response):
        return checked
    state, session, me = checked
    if not _fresh(state, session):
        return await _action(state, request, session, me, "confirm")
    kind = {"totp": TOTP, "passkeys": PASSKEY}.get(str(request.path_params.get("kind")))
    authenticator_id = _authenticator_id(request)
    removed = (
        await state.authenticators.remove(me.id, authenticator_id, kind)
        if authenticator_id and kind
        else None
    )
    if removed is None:
        return error_page(state, request, "There is no such authenticator.", 404)
    await state.admin.audit(
        _actor(state, request, me),
        f"{kind}.remove",
        now_s(),
        target_type="user",
        target_id=me.id,
        details={"authenticator_id": removed.id},
    )
    done = "totp-removed" if kind == TOTP else "passkey-removed"
    return RedirectResponse(f"/settings/security?done={done}", status_code=303)


async def regenerate_codes(request: Request) -> Response:
    """New recovery codes, shown once in this response (only their hashes are stored)."""
    checked = await _checked(request)
    if isinstance(checked, Response):
        return checked
    state, session, me = checked
    if not _fresh(state, session):
        return await _action(state, request, session, me, "confirm")
    if state.config.authentication.recovery_code.disabled:
        return error_page(state, request, "Recovery codes are turned off.", 400)
    codes = new_recovery_codes(state.config.authentication.recovery_code.count)
    key = await mfa_key(state)
    hashes = [recovery_code_hash(key, me.id, c) for c in codes]
    if not await state.authenticators.replace_recovery_codes(me.id, hashes, now_s()):
        return error_page(
            state, request, "Set up two-factor authentication first: codes go with it.", 400
        )
    await state.admin.audit(
        _actor(state, request, me),
        "recovery_codes.regenerate",
        now_s(),
        target_type="user",
        target_id=me.id,
        details={"count": len(codes)},
    )
    shown = [format_recovery_code(c) for c in codes]
    return await _security(state, request, me, {"new_codes": shown})


async def forget_devices(request: Request) -> Response:
    checked = await _checked(request)
    if isinstance(checked, Response):
        return checked
    state, session, me = checked
    if not _fresh(state, session):
        return await _action(state, request, session, me, "confirm")
    count = await state.authenticators.forget_devices(me.id)
    await state.admin.audit(
        _actor(state, request, me),
        "device_tokens.forget",
        now_s(),
        target_type="user",
        target_id=me.id,
        details={"count": count},
    )
    return RedirectResponse("/settings/security?done=devices-forgotten", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/settings/security", security_page, methods=["GET"]),
        Route("/settings/security/totp/add", add_totp, methods=["POST"]),
        Route("/settings/security/passkeys/add", add_passkey, methods=["POST"]),
        Route(
            "/settings/security/{kind:str}/{authenticator_id:str}/remove",
            remove_authenticator,
            methods=["POST"],
        ),
        Route("/settings/security/recovery-codes", regenerate_codes, methods=["POST"]),
        Route("/settings/security/devices/forget", forget_devices, methods=["POST"]),
    ]
