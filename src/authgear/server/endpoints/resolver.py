"""GET/HEAD /_resolver/resolve (and /resolve): forward auth for nginx auth_request, Traefik
ForwardAuth and Caddy forward_auth (Authgear's resolver contract; bearer tokens per RFC 6750).

Always 200 with an empty body; the answer is in the ``x-authgear-*`` headers:

- no credentials: no ``X-Authgear-Session-Valid`` at all;
- a user's session (Bearer access token, or the session cookie): ``X-Authgear-Session-Valid:
  true`` and the user's headers;
- a client's own token (client_credentials): ``X-Authgear-Session-Valid: false`` (it is no
  session, so a backend that knows only the session headers refuses it) plus
  ``X-Authgear-Client-Valid: true``, ``X-Authgear-Client-Id``, ``X-Authgear-Client-Scopes``;
- anything else: ``X-Authgear-Session-Valid: false``.

``X-Authgear-Credential: bearer|cookie`` says what was presented, so a backend can refuse
cookie-authenticated requests it did not expect (a forged cross-site POST rides on cookies).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from authgear.server.http import bearer_token
from authgear.server.sessions import (
    ValidClientToken,
    resolve_access_token,
    session_from_cookie,
    touch,
)
from authgear.server.state import get_state
from authgear.server.storage import User


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _valid_headers(user: User, amr: list[str], auth_time: int | None) -> dict[str, str]:
    headers = {
        "X-Authgear-Session-Valid": "true",
        "X-Authgear-User-Id": user.id,
        "X-Authgear-User-Anonymous": "false",
        "X-Authgear-User-Verified": _bool(user.email_verified),
        "X-Authgear-User-Can-Reauthenticate": _bool(user.can_reauthenticate),
    }
    if user.roles:
        headers["X-Authgear-User-Roles"] = ",".join(user.roles)
    if amr:
        headers["X-Authgear-Session-Amr"] = " ".join(amr)
    if auth_time is not None:
        headers["X-Authgear-Session-Authenticated-At"] = str(auth_time)
    return headers


def _client_headers(valid: ValidClientToken) -> dict[str, str]:
    headers = {
        "X-Authgear-Session-Valid": "false",
        "X-Authgear-Client-Valid": "true",
        "X-Authgear-Client-Id": valid.client.id,
    }
    if valid.record.scope:
        headers["X-Authgear-Client-Scopes"] = valid.record.scope
    return headers


INVALID = {"X-Authgear-Session-Valid": "false"}
NO_CACHE = {"Cache-Control": "no-store"}
BEARER = {**NO_CACHE, "X-Authgear-Credential": "bearer"}
COOKIE = {**NO_CACHE, "X-Authgear-Credential": "cookie"}


async def resolve_endpoint(request: Request) -> Response:
    state = get_state(request)
    token = bearer_token(request)
    if token is not None:
        valid = await resolve_access_token(state, token)
        if valid is None:
            return Response(status_code=200, headers={**BEARER, **INVALID})
        if isinstance(valid, ValidClientToken):
            return Response(status_code=200, headers={**BEARER, **_client_headers(valid)})
        record = valid.record
        client = state.config.client(record.client_id)
        await touch(state, request, record.session_kind, record.session_id, client)
        headers = _valid_headers(valid.user, record.amr, record.auth_time)
        return Response(status_code=200, headers={**BEARER, **headers})
    if state.config.session.cookie_name in request.cookies:
        found = await session_from_cookie(state, request)
        if found is None:
            return Response(status_code=200, headers={**COOKIE, **INVALID})
        session, user = found
        await touch(state, request, "idp", session.id, None)
        headers = _valid_headers(user, session.amr, session.authenticated_at)
        return Response(status_code=200, headers={**COOKIE, **headers})
    return Response(status_code=200, headers=NO_CACHE)
