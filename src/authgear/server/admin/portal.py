"""The portal (/portal): server-rendered pages for administrators, and the user's own session
list (/settings/sessions).

Signed in with the login page's IdP session cookie; the portal needs the ``admin`` role. Every
change is a POST with a session-bound CSRF token (security/csrf.py), behind a confirmation
page that works without JavaScript.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from authgear.server.admin import present
from authgear.server.admin.authenticators import AuthenticatorOps
from authgear.server.admin.identities import IdentityOps, LastSignInMethod
from authgear.server.admin.ops import AdminOps, InvalidInput
from authgear.server.http import OAuthError, client_ip, read_form
from authgear.server.sessions import clear_session_cookie, now_s, session_from_cookie
from authgear.server.state import ServerState, get_state
from authgear.server.storage import IdpSession, User
from authgear.server.storage.admin import Actor, BadCursor, SessionRecord
from authgear.server.ui import csrf_ok, error_page, render

ADMIN_ROLE = "admin"
PAGE_SIZE = 25
MAX_ID = 100

DONE_MESSAGES = {
    "revoked": "The session was revoked. Its tokens and cookie no longer work.",
    "revoked-all": "All sessions of this user were revoked.",
    "disabled": "The user is disabled and can no longer sign in or use any session.",
    "enabled": "The user is enabled again.",
    "deleted": "The user and all their sessions were deleted.",
    "signed-out": "That session is signed out.",
    "reset-sent": "A password reset code and link were emailed to the user.",
    "verified": "The email address is marked verified.",
    "password-set": "The password was set; the user was emailed a notice.",
    "mfa-reset": "The second factor was reset: authenticator apps, recovery codes and trusted "
    "browsers are gone.",
    "passkey-removed": "The passkey was removed.",
    "identity-unlinked": "The linked account was unlinked.",
}


class Fmt:
    """Formatting helpers for the templates, bound to one moment."""

    def __init__(self, state: ServerState, now: int) -> None:
        self.state = state
        self.now = now

    def ago(self, ts: int | None) -> str:
        return present.relative_time(ts, self.now)

    iso = staticmethod(present.iso)
    full = staticmethod(present.full_time)
    title = staticmethod(present.session_title)
    kind = staticmethod(present.kind_label)
    ua = staticmethod(present.describe_user_agent)
    action = staticmethod(present.action_label)
    actor = staticmethod(present.actor_text)

    def client(self, client_id: str | None) -> str:
        return present.client_name(self.state.config, client_id) or "—"


def _login_redirect(request: Request) -> Response:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)


async def _signed_in(state: ServerState, request: Request) -> tuple[IdpSession, User] | None:
    return await session_from_cookie(state, request)


def _page(
    state: ServerState,
    request: Request,
    template: str,
    context: dict[str, Any],
    status: int = 200,
) -> Response:
    return render(state, request, template, {"fmt": Fmt(state, now_s()), **context}, status)


async def _admin(state: ServerState, request: Request) -> tuple[User, Actor] | Response:
    found = await _signed_in(state, request)
    if found is None:
        return _login_redirect(request)
    user = found[1]
    if ADMIN_ROLE not in user.roles:
        return _page(state, request, "portal/forbidden.html", {"me": user}, 403)
    ip = client_ip(request, state.config.trusted_proxies)
    return user, Actor("portal", user.id, user.email, ip)


def _id(request: Request, name: str) -> str | None:
    value = str(request.path_params.get(name, ""))
    return value if 0 < len(value) <= MAX_ID else None


async def _checked_form(request: Request) -> dict[str, str] | None:
    """The POSTed form if its CSRF token is good, else None."""
    try:
        form = await read_form(request)
    except OAuthError:
        return None
    return form if csrf_ok(get_state(request), request, form.get("csrf_token")) else None


def _expired(state: ServerState, request: Request) -> Response:
    return error_page(state, request, "Your session expired. Please try again.", 403)


def _not_found(state: ServerState, request: Request, what: str) -> Response:
    return error_page(state, request, f"There is no such {what}.", 404)


async def _session_page(
    state: ServerState, request: Request, user_id: str
) -> tuple[list[SessionRecord], str | None, bool]:
    """A page of the user's sessions (``?cursor=``), the next page's URL, and whether this is
    a later page. A cursor we did not hand out shows the first page."""
    cursor = request.query_params.get("cursor") or None
    try:
        sessions, nxt = await state.admin.session_page(
            user_id, now_s(), limit=PAGE_SIZE, after=cursor
        )
    except BadCursor:
        cursor = None
        sessions, nxt = await state.admin.session_page(user_id, now_s(), limit=PAGE_SIZE)
    next_url = f"{request.url.path}?{urlencode({'cursor': nxt})}#sessions" if nxt else None
    return sessions, next_url, cursor is not None


def _back(user_id: str, done: str) -> Response:
    return RedirectResponse(f"/portal/users/{user_id}?done={done}", status_code=303)


# -- pages ----------------------------------------------------------------------------------


async def portal_home(request: Request) -> Response:
    return RedirectResponse("/portal/users", status_code=303)


async def users_page(request: Request) -> Response:
    state = get_state(request)
    who = await _admin(state, request)
    if isinstance(who, Response):
        return who
    me, _ = who
    query = request.query_params.get("q", "").strip()[:320]
    cursor = request.query_params.get("cursor") or None
    try:
        users, nxt = await state.admin.list_users(
            query=query or None, limit=PAGE_SIZE, after=cursor
        )
    except BadCursor:
        users, nxt = [], None
    next_url = f"/portal/users?{urlencode({'q': query, 'cursor': nxt})}" if nxt else None
    return _page(
        state,
        request,
        "portal/users.html",
        {
            "me": me,
            "section": "users",
            "users": users,
            "q": query,
            "next_url": next_url,
            "paged": cursor is not None,
            "total": await state.admin.count_users(),
        },
    )


async def user_page(request: Request) -> Response:
    state = get_state(request)
    who = await _admin(state, request)
    if isinstance(who, Response):
        return who
    me, _ = who
    user_id = _id(request, "user_id")
    user = await state.admin.get_user(user_id) if user_id else None
    if user is None:
        return _not_found(state, request, "user")
    sessions, next_url, paged = await _session_page(state, request, user.id)
    entries, _ = await state.admin.list_audit(limit=10, target_id=user.id)
    authn = await AuthenticatorOps(state.admin, state.authenticators).describe(user.id, now_s())
    linked = await IdentityOps(state.admin, state.identities, state.config).describe(user.id)
    return _page(
        state,
        request,
        "portal/user.html",
        {
            "me": me,
            "section": "users",
            "user": user,
            "sessions": sessions,
            "sessions_next": next_url,
            "sessions_paged": paged,
            "entries": entries,
            "authn": authn,
            "identities": linked["identities"] if linked else [],
            "done": DONE_MESSAGES.get(request.query_params.get("done", "")),
        },
    )


async def audit_page(request: Request) -> Response:
    state = get_state(request)
    who = await _admin(state, request)
    if isinstance(who, Response):
        return who
    me, _ = who
    raw = request.query_params.get("cursor", "")
    cursor = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 18 else None
    entries, nxt = await state.admin.list_audit(limit=PAGE_SIZE * 2, before=cursor)
    return _page(
        state,
        request,
        "portal/audit.html",
        {
            "me": me,
            "section": "audit",
            "entries": entries,
            "next_url": f"/portal/audit?cursor={nxt}" if nxt else None,
            "paged": cursor is not None,
        },
    )


# -- actions: GET shows the confirmation, POST does it ----------------------------------------

_ACTIONS = {
    "disable": ("Disable this user?", "Disable user", "disabled"),
    "enable": ("Enable this user?", "Enable user", "enabled"),
    "delete": ("Delete this user?", "Delete user", "deleted"),
    "revoke-all": ("Revoke all sessions of this user?", "Revoke all sessions", "revoked-all"),
    "send-reset": ("Send a password reset?", "Send reset email", "reset-sent"),
    "mark-verified": ("Mark the email address verified?", "Mark verified", "verified"),
    "set-password": ("Set a new password?", "Set password", "password-set"),
    "reset-mfa": ("Reset this user's second factor?", "Reset second factor", "mfa-reset"),
}
_EXPLAIN = {
    "disable": "They are signed out of every app and browser at once and cannot sign in until "
    "enabled again. Their sessions are kept and work again after enabling.",
    "enable": "They can sign in again, and their remaining sessions work again.",
    "delete": "The account, its sessions, refresh tokens and access tokens are deleted. "
    "This cannot be undone.",
    "revoke-all": "Every browser and app session of this user ends now: refresh tokens fail "
    "with invalid_grant, access tokens are refused by userinfo and the resolver, and browser "
    "cookies no longer sign them in.",
    "send-reset": "The user gets an email with a code and a link to choose a new password "
    "(single use, valid for a limited time). Their current password keeps working until then.",
    "mark-verified": "Apps see the address as verified (email_verified, is_verified) from "
    "their next token or userinfo request.",
    "set-password": "The password must meet the password policy. The user is emailed a notice, "
    "and their sessions end if you tick the box.",
    "reset-mfa": "Their authenticator apps, recovery codes and trusted browsers are deleted (for "
    "a user who lost their phone). They sign in with their password or a passkey; if a second "
    "factor is required, they set up a new one at their next sign-in.",
}


async def user_action(request: Request) -> Response:
    state = get_state(request)
    who = await _admin(state, request)
    if isinstance(who, Response):
        return who
    me, actor = who
    action = str(request.path_params.get("action", ""))
    user_id = _id(request, "user_id")
    if action not in _ACTIONS:
        return _not_found(state, request, "page")
    user = await state.admin.get_user(user_id) if user_id else None
    if user is None:
        return _not_found(state, request, "user")
    heading, button, done = _ACTIONS[action]
    if request.method == "GET":
        return _page(
            state,
            request,
            "portal/confirm.html",
            {
                "me": me,
                "section": "users",
                "heading": heading,
                "explain": _EXPLAIN[action],
                "button": button,
                "danger": action != "enable",
                "action": f"/portal/users/{user.id}/{action}",
                "cancel": f"/portal/users/{user.id}",
                "user": user,
                "session": None,
                "password": action == "set-password",
            },
        )
    form = await _checked_form(request)
    if form is None:
        return _expired(state, request)
    ops = AdminOps(state.repo, state.admin, state.accounts)
    now = now_s()
    if action in _RECOVERY:
        return await _recovery_action(state, request, ops, actor, me, user, action, form)
    if action == "delete":
        await ops.delete_user(actor, now, user.id)
        return RedirectResponse("/portal/users?done=deleted", status_code=303)
    if action == "revoke-all":
        await ops.revoke_all(actor, now, user.id)
    elif action == "reset-mfa":
        await AuthenticatorOps(state.admin, state.authenticators).reset_mfa(actor, now, user.id)
    else:
        await ops.set_disabled(actor, now, user.id, action == "disable")
    return _back(user.id, done)


_RECOVERY = frozenset({"send-reset", "mark-verified", "set-password"})


async def _recovery_action(
    state: ServerState,
    request: Request,
    ops: AdminOps,
    actor: Actor,
    me: User,
    user: User,
    action: str,
    form: dict[str, str],
) -> Response:
    """Send a reset, mark verified, set a password; a refused password shows the form again."""
    now = now_s()
    try:
        if action == "send-reset":
            await ops.send_reset(actor, now, user.id)
        elif action == "mark-verified":
            await ops.mark_verified(actor, now, user.id)
        else:
            await ops.set_password(
                actor, now, user.id, form.get("password", ""), end_sessions="end_sessions" in form
            )
    except InvalidInput as e:
        heading, button, _ = _ACTIONS[action]
        return _page(
            state,
            request,
            "portal/confirm.html",
            {
                "me": me,
                "section": "users",
                "heading": heading,
                "explain": _EXPLAIN[action],
                "button": button,
                "danger": True,
                "action": f"/portal/users/{user.id}/{action}",
                "cancel": f"/portal/users/{user.id}",
                "user": user,
                "session": None,
                "password": action == "set-password",
                "error": str(e),
            },
            400,
        )
    return _back(user.id, _ACTIONS[action][2])


async def revoke_session_action(request: Request) -> Response:
    state = get_state(request)
    who = await _admin(state, request)
    if isinstance(who, Response):
        return who
    me, actor = who
    user_id, session_id = _id(request, "user_id"), _id(request, "session_id")
    user = await state.admin.get_user(user_id) if user_id else None
    session = await state.admin.get_session(session_id) if session_id else None
    if user is None or session is None or session.user_id != user.id:
        return _not_found(state, request, "session")
    if request.method == "GET":
        return _page(
            state,
            request,
            "portal/confirm.html",
            {
                "me": me,
                "section": "users",
                "heading": "Revoke this session?",
                "explain": "The session ends now: its refresh token fails with invalid_grant, "
                "its access tokens are refused by userinfo and the resolver, and a browser "
                "cookie no longer signs the user in.",
                "button": "Revoke session",
                "danger": True,
                "action": f"/portal/users/{user.id}/sessions/{session.id}/revoke",
                "cancel": f"/portal/users/{user.id}",
                "user": user,
                "session": session,
            },
        )
    if await _checked_form(request) is None:
        return _expired(state, request)
    await AdminOps(state.repo, state.admin).revoke_session(
        actor, now_s(), session.id, user_id=user.id
    )
    return _back(user.id, "revoked")


async def remove_passkey_action(request: Request) -> Response:
    """GET: confirm; POST: remove one of the user's passkeys."""
    state = get_state(request)
    who = await _admin(state, request)
    if isinstance(who, Response):
        return who
    me, actor = who
    user_id, passkey_id = _id(request, "user_id"), _id(request, "authenticator_id")
    user = await state.admin.get_user(user_id) if user_id else None
    passkey = await state.authenticators.get(user.id, passkey_id) if user and passkey_id else None
    if user is None or passkey is None or passkey.kind != "passkey":
        return _not_found(state, request, "passkey")
    if request.method == "GET":
        return _page(
            state,
            request,
            "portal/confirm.html",
            {
                "me": me,
                "section": "users",
                "heading": "Remove this passkey?",
                "explain": f"The passkey “{passkey.label or 'Passkey'}” will no longer sign "
                "this user in. Their sessions are not ended.",
                "button": "Remove passkey",
                "danger": True,
                "action": f"/portal/users/{user.id}/passkeys/{passkey.id}/remove",
                "cancel": f"/portal/users/{user.id}",
                "user": user,
                "session": None,
            },
        )
    if not await _checked_form(request):
        return _expired(state, request)
    await AuthenticatorOps(state.admin, state.authenticators).remove_passkey(
        actor, now_s(), user.id, passkey.id
    )
    return _back(user.id, "passkey-removed")


async def unlink_identity_action(request: Request) -> Response:
    """GET: confirm; POST: unlink one of the user's upstream identities (not the last way to
    sign in)."""
    state = get_state(request)
    who = await _admin(state, request)
    if isinstance(who, Response):
        return who
    me, actor = who
    user_id, identity_id = _id(request, "user_id"), _id(request, "identity_id")
    user = await state.admin.get_user(user_id) if user_id else None
    identity = await state.identities.get(user.id, identity_id) if user and identity_id else None
    if user is None or identity is None:
        return _not_found(state, request, "linked account")
    if request.method == "GET":
        return _page(
            state,
            request,
            "portal/confirm.html",
            {
                "me": me,
                "section": "users",
                "heading": "Unlink this account?",
                "explain": f"The {identity.provider} account “{identity.email or identity.subject}”"
                " will no longer sign this user in. Their sessions are not ended.",
                "button": "Unlink",
                "danger": True,
                "action": f"/portal/users/{user.id}/identities/{identity.id}/unlink",
                "cancel": f"/portal/users/{user.id}",
                "user": user,
                "session": None,
            },
        )
    if not await _checked_form(request):
        return _expired(state, request)
    try:
        await IdentityOps(state.admin, state.identities, state.config).unlink(
            actor, now_s(), user.id, identity.id
        )
    except LastSignInMethod:
        return error_page(
            state,
            request,
            "This is the user's last way to sign in, so it cannot be unlinked. Set a password "
            "for the user first.",
            409,
        )
    return _back(user.id, "identity-unlinked")


# -- the user's own sessions ------------------------------------------------------------------


async def my_sessions_page(request: Request) -> Response:
    state = get_state(request)
    found = await _signed_in(state, request)
    if found is None:
        return _login_redirect(request)
    current, me = found
    sessions, next_url, paged = await _session_page(state, request, me.id)
    return _page(
        state,
        request,
        "settings_sessions.html",
        {
            "me": me,
            "sessions": sessions,
            "sessions_next": next_url,
            "sessions_paged": paged,
            "current_id": current.id,
            "done": DONE_MESSAGES.get(request.query_params.get("done", "")),
        },
    )


async def my_session_revoke(request: Request) -> Response:
    state = get_state(request)
    found = await _signed_in(state, request)
    if found is None:
        return _login_redirect(request)
    current, me = found
    if await _checked_form(request) is None:
        return _expired(state, request)
    session_id = _id(request, "session_id")
    actor = Actor("self", me.id, me.email, client_ip(request, state.config.trusted_proxies))
    revoked: SessionRecord | None = None
    if session_id:
        revoked = await AdminOps(state.repo, state.admin).revoke_session(
            actor, now_s(), session_id, user_id=me.id
        )
    if revoked is None:
        return _not_found(state, request, "session")
    if revoked.id == current.id:
        response = RedirectResponse(
            f"/login?{urlencode({'next': '/settings/sessions'})}", status_code=303
        )
        clear_session_cookie(state, response)
        return response
    return RedirectResponse("/settings/sessions?done=signed-out", status_code=303)


def portal_routes() -> list[BaseRoute]:
    return [
        Route("/portal", portal_home, methods=["GET"]),
        Route("/portal/users", users_page, methods=["GET"]),
        Route("/portal/users/{user_id}", user_page, methods=["GET"]),
        Route(
            "/portal/users/{user_id}/sessions/{session_id}/revoke",
            revoke_session_action,
            methods=["GET", "POST"],
        ),
        Route(
            "/portal/users/{user_id}/passkeys/{authenticator_id}/remove",
            remove_passkey_action,
            methods=["GET", "POST"],
        ),
        Route(
            "/portal/users/{user_id}/identities/{identity_id}/unlink",
            unlink_identity_action,
            methods=["GET", "POST"],
        ),
        Route("/portal/users/{user_id}/{action}", user_action, methods=["GET", "POST"]),
        Route("/portal/audit", audit_page, methods=["GET"]),
        Route("/settings/sessions", my_sessions_page, methods=["GET"]),
        Route("/settings/sessions/{session_id}/revoke", my_session_revoke, methods=["POST"]),
    ]
