"""GET/POST /oauth2/end_session: OpenID Connect RP-Initiated Logout 1.0.

The browser session ends without a question only when the request carries an
``id_token_hint`` we issued for *this* browser session (its ``sid``). Anything else (a bare GET
from any site, a hint for someone else's session, an invalid hint) gets a confirmation page,
and the session ends on its POST, which needs our CSRF token and our origin: a cross-site
``<img src=/oauth2/end_session>`` signs no one out.

``post_logout_redirect_uri`` is followed only when it is registered exactly
(security/redirect_uris.py) for the client the hint's ``aud`` or ``client_id`` names (both, if
given, must agree); ``state`` goes back with it. Without either, a URI registered by some client
is followed (the official web SDK's cookie mode sends neither), only after the user confirmed
or when there is no session to end. Ending the session is storage's one ``end_session``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authgear.server.authorization import verified_id_token_hint
from authgear.server.config import ClientConfig
from authgear.server.http import OAuthError, query_params, read_form
from authgear.server.security import redirect_uris
from authgear.server.sessions import clear_session_cookie, session_from_cookie
from authgear.server.state import ServerState, get_state
from authgear.server.storage import IdpSession, User
from authgear.server.ui import csrf_ok, error_page, render

# Passed through the confirmation page's form.
CARRIED = ("post_logout_redirect_uri", "state", "client_id", "ui_locales")


def _for_this_session(claims: dict[str, Any] | None, found: tuple[IdpSession, User]) -> bool:
    if claims is None:
        return False
    session, user = found
    sid = claims.get("sid")
    return claims.get("sub") == user.id and (sid is None or sid == session.id)


def _target(
    state: ServerState, client: ClientConfig | None, uri: str | None, state_param: str | None
) -> str | None:
    """Where to send the browser afterwards: a registered URI (plus ``state``), or None."""
    if not uri:
        return None
    clients = [client] if client is not None else list(state.config.clients)
    for c in clients:
        if redirect_uris.match(c.post_logout_redirect_uris, uri, loopback_any_port=c.is_public):
            extra = urlencode({"state": state_param}) if state_param else ""
            return redirect_uris.add_query(uri, extra) if extra else uri
    return None


async def _params(request: Request) -> dict[str, str]:
    try:
        return await read_form(request) if request.method == "POST" else query_params(request)
    except OAuthError:
        return {}


async def end_session_endpoint(request: Request) -> Response:
    state = get_state(request)
    params = await _params(request)
    hint = verified_id_token_hint(state, params.get("id_token_hint"))
    client_id = params.get("client_id") or None
    if hint is not None and client_id is not None and client_id != hint["aud"]:
        return error_page(state, request, "The sign-out request is not valid.", 400)
    client_id = client_id or (hint["aud"] if hint else None)
    client = state.config.client(client_id) if client_id else None
    if client_id is not None and client is None:
        return error_page(state, request, "The app that sent you here is not registered.", 400)

    found = await session_from_cookie(state, request)
    confirmed = (
        request.method == "POST"
        and params.get("confirm") == "yes"
        and csrf_ok(state, request, params.get("csrf_token"))
    )
    if found is not None and not confirmed and not _for_this_session(hint, found):
        carry = [(k, params[k]) for k in CARRIED if params.get(k) and k != "client_id"]
        if client is not None:
            carry.append(("client_id", client.id))
        return render(
            state,
            request,
            "end_session_confirm.html",
            {"app": client.name if client else None, "email": found[1].email, "carry": carry},
        )
    if found is not None:
        await state.repo.end_session(found[0].id)

    uri = params.get("post_logout_redirect_uri")
    target = _target(state, client, uri, params.get("state"))
    response: Response
    if target is not None:
        response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    else:
        message = (
            "The app's return address is not registered, so you stay on this page." if uri else None
        )
        response = render(state, request, "signed_out.html", {"message": message})
    clear_session_cookie(state, response)
    return response
