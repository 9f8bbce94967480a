"""/settings/security, "Sign in with other accounts": the user's linked upstream identities,
linking one (a settings flow whose action step is ``link_sso``) and unlinking one (never the
last way to sign in: a password, a passkey or another linked identity must remain). Like every
change there, it needs a recent sign-in (settings_page.py), and goes to the audit log."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from authgear.server.security.passkeys import relying_party
from authgear.server.sessions import now_s
from authgear.server.signin import settings_page
from authgear.server.signin.engine import start_flow
from authgear.server.signin.flow import SETTINGS, new_flow
from authgear.server.state import ServerState
from authgear.server.storage import IdpSession, User
from authgear.server.storage.identities import LastSignInMethod
from authgear.server.ui import error_page

LAST_METHOD = (
    "This is your only way to sign in, so it cannot be unlinked. Add a passkey or link "
    "another account first (or set a password with \u201cForgot password?\u201d)."
)


async def section(state: ServerState, me: User) -> dict[str, Any]:
    """The template's values: linked identities (with their provider's name) and the
    providers that can still be linked."""
    configured = {p.alias: p for p in state.config.identity_providers}
    linked = await state.identities.list_for_user(me.id)
    rows = [
        {
            "id": i.id,
            "provider": i.provider,
            "label": configured[i.provider].label if i.provider in configured else i.provider,
            "email": i.email,
            "name": i.claims.get("name") or i.claims.get("login"),
            "created_at": i.created_at,
            "last_used_at": i.last_used_at,
            "usable": i.provider in configured,
        }
        for i in linked
    ]
    taken = {i.provider for i in linked}
    linkable = [{"alias": a, "label": p.label} for a, p in configured.items() if a not in taken]
    return {
        "identities": rows,
        "linkable": linkable,
        "sso_enabled": bool(configured),
    }


async def link(request: Request) -> Response:
    """POST /settings/security/identities/link (``provider``): a settings flow that signs in at
    the provider and links that account."""
    checked = await settings_page.checked(request)
    if isinstance(checked, Response):
        return checked
    state, session, me, form = checked
    cfg = state.config.identity_provider(form.get("provider", ""))
    if cfg is None:
        return error_page(state, request, "There is no such way to sign in.", 400)
    return await _start(state, request, session, me, cfg.alias)


async def _start(
    state: ServerState, request: Request, session: IdpSession, me: User, alias: str
) -> Response:
    flow = new_flow(
        SETTINGS,
        {"kind": "settings", "action": "link_identity", "alias": alias},
        now_s(),
        user_id=me.id,
        reauth_session=None if settings_page.fresh(state, session) else session.id,
    )
    return await start_flow(state, request, flow)


async def unlink(request: Request) -> Response:
    """POST /settings/security/identities/{id}/unlink."""
    checked = await settings_page.checked(request)
    if isinstance(checked, Response):
        return checked
    state, session, me, _form = checked
    if not settings_page.fresh(state, session):
        return await settings_page.confirm(state, request, session, me)
    identity_id = str(request.path_params.get("identity_id", ""))[:100]
    cfg = state.config.authentication
    try:
        removed = await state.identities.unlink(
            me.id,
            identity_id,
            usable_providers=[p.alias for p in state.config.identity_providers],
            password_counts=cfg.passwords,
            passkeys_count=cfg.passkeys
            and relying_party(state.issuer, state.config.app_name) is not None,
        )
    except LastSignInMethod:
        return error_page(state, request, LAST_METHOD, 409)
    if removed is None:
        return error_page(state, request, "There is no such linked account.", 404)
    await state.admin.audit(
        settings_page.actor(state, request, me),
        "identity.unlink",
        now_s(),
        target_type="user",
        target_id=me.id,
        details={"identity_id": removed.id, "provider": removed.provider},
    )
    return RedirectResponse("/settings/security?done=identity-unlinked", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/settings/security/identities/link", link, methods=["POST"]),
        Route("/settings/security/identities/{identity_id:str}/unlink", unlink, methods=["POST"]),
    ]
