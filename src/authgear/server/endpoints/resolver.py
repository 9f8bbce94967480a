"""GET/HEAD /_resolver/resolve (and /resolve): forward auth for nginx auth_request / Traefik.

Always 200 with an empty body; the answer is in the ``x-authgear-*`` headers.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from authgear.server.http import bearer_token
from authgear.server.sessions import session_from_cookie, touch, validate_access_token
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


INVALID = {"X-Authgear-Session-Valid": "false"}
NO_CACHE = {"Cache-Control": "no-store"}


async def resolve_endpoint(request: Request) -> Response:
    state = get_state(request)
    token = bearer_token(request)
    if token is not None:
        valid = await validate_access_token(state, token)
        if valid is None:
            return Response(status_code=200, headers={**NO_CACHE, **INVALID})
        record = valid.record
        client = state.config.client(record.client_id)
        await touch(state, request, record.session_kind, record.session_id, client)
        headers = _valid_headers(valid.user, record.amr, record.auth_time)
        return Response(status_code=200, headers={**NO_CACHE, **headers})
    if state.config.session.cookie_name in request.cookies:
        found = await session_from_cookie(state, request)
        if found is None:
            return Response(status_code=200, headers={**NO_CACHE, **INVALID})
        session, user = found
        await touch(state, request, "idp", session.id, None)
        headers = _valid_headers(user, session.amr, session.authenticated_at)
        return Response(status_code=200, headers={**NO_CACHE, **headers})
    return Response(status_code=200, headers=NO_CACHE)
