"""GET/POST /oauth2/end_session: end the browser session, then go back or say so."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import jwt
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authgear.server.http import OAuthError, query_params, read_form
from authgear.server.sessions import clear_session_cookie, session_from_cookie
from authgear.server.state import ServerState, get_state
from authgear.server.ui import render


def _hint_client(state: ServerState, id_token_hint: str) -> str | None:
    """The audience of an ID token we signed; expired ones too (OIDC RP-Initiated Logout)."""
    try:
        header = jwt.get_unverified_header(id_token_hint)
        key = state.keys.public_keys.get(str(header.get("kid")))
        if key is None:
            return None
        claims: dict[str, Any] = jwt.decode(
            id_token_hint,
            key,
            algorithms=["RS256"],
            issuer=state.issuer,
            options={"verify_exp": False, "verify_aud": False},
        )
    except jwt.PyJWTError:
        return None
    aud = claims.get("aud")
    return aud if isinstance(aud, str) else None


async def end_session_endpoint(request: Request) -> Response:
    state = get_state(request)
    try:
        params = await read_form(request) if request.method == "POST" else query_params(request)
    except OAuthError:
        params = {}
    found = await session_from_cookie(state, request)
    if found is not None:
        await state.repo.delete_idp_session(found[0].id)

    target = params.get("post_logout_redirect_uri")
    client_id = params.get("client_id")
    hint = params.get("id_token_hint")
    if hint and not client_id:
        client_id = _hint_client(state, hint)
    client = state.config.client(client_id) if client_id else None
    message = None
    response: Response
    if target and client is not None and target in client.post_logout_redirect_uris:
        parts = urlsplit(target)
        query = parts.query
        if params.get("state"):
            extra = urlencode({"state": params["state"]})
            query = f"{query}&{extra}" if query else extra
        response = RedirectResponse(
            urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment)),
            status_code=303,
            headers={"Cache-Control": "no-store"},
        )
    else:
        if target:
            message = "The app's return address is not registered, so you stay on this page."
        response = render(state, request, "signed_out.html", {"message": message})
    clear_session_cookie(state, response)
    return response
