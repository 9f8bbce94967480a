"""GET/POST /oauth2/userinfo (OpenID Connect Core §5.3): the claims of the user behind a Bearer
token (RFC 6750) or the session cookie."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from authgear.server.http import NO_STORE, bearer_token
from authgear.server.sessions import session_from_cookie, touch, validate_access_token
from authgear.server.state import get_state
from authgear.server.storage import User
from authgear.server.tokens import user_claims

INVALID = JSONResponse(
    {"error": "invalid_grant", "error_description": "invalid session"},
    status_code=401,
    headers={
        **NO_STORE,
        "WWW-Authenticate": 'Bearer error="invalid_grant", error_description="invalid session"',
    },
)


def userinfo_claims(user: User) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        **{k: v for k, v in user.standard_attributes.items() if k not in ("sub", "email")},
        "updated_at": user.updated_at,
        **user_claims(
            is_anonymous=False,
            is_verified=user.email_verified,
            can_reauthenticate=user.can_reauthenticate,
            roles=list(user.roles),
        ),
        "custom_attributes": dict(user.custom_attributes),
    }
    return claims


async def userinfo_endpoint(request: Request) -> Response:
    state = get_state(request)
    token = bearer_token(request)
    user: User | None = None
    if token is not None:
        valid = await validate_access_token(state, token)
        if valid is not None:
            user = valid.user
            client = state.config.client(valid.record.client_id)
            await touch(state, request, valid.record.session_kind, valid.record.session_id, client)
    else:
        found = await session_from_cookie(state, request)
        if found is not None:
            user = found[1]
            await touch(state, request, "idp", found[0].id, None)
    if user is None:
        return INVALID
    return JSONResponse(userinfo_claims(user), headers=NO_STORE)
