"""GET /_resolver/revocations: the revocation feed JWT-mode backends poll (issue 11).

A JWT-mode backend verifies access tokens locally, so on its own it accepts a revoked
session's token until the token expires. Our access tokens carry the id of their session
(``sid``); this endpoint lists the sessions that ended, oldest first, after a cursor, so a
:class:`authgear.backend.JWTVerifier` polling it every few seconds refuses those tokens
within seconds. Who may read it: a confidential client, authenticated with HTTP Basic as at
the token endpoint (RFC 6749 §2.3.1), as RFC 7662 §2.1 has resource servers authenticate to
the introspection endpoint. It is served with the resolver (the public port and
``resolver_port``), and every server process answers from the database alone.

Query: ``after`` (the ``cursor`` of the previous answer; absent: from the oldest row kept),
``limit`` (1-1000, default 500). Answer::

    {"revocations": [{"sid": "...", "revoked_at": 1700000000}, ...],
     "cursor": "42", "has_more": false, "retention": 1860}

``revoked_at`` refuses the session's tokens issued up to then (a disabled user's sessions
come back when the user is enabled, with new tokens). ``retention``: how long the server keeps
a row, the longest access-token lifetime plus a minute; after that a reader may forget it too.
A row can come twice (storage/revocations.py explains when); readers keep a set.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from authgear.server.http import OAuthError, basic_credentials, json_response, query_params
from authgear.server.sessions import now_s, revocation_retention
from authgear.server.state import get_state
from authgear.server.storage.revocations import MAX_PAGE

DEFAULT_LIMIT = 500
_MAX_CURSOR = 2**62


def _unauthorized(description: str) -> OAuthError:
    return OAuthError(
        "invalid_client", description, 401, {"WWW-Authenticate": 'Basic realm="authgear"'}
    )


def _integer(params: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    # ASCII digits only: int() would also take " 7", "+7", "7_0" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not low <= int(raw) <= high:
        raise OAuthError("invalid_request", f"invalid {name}")
    return int(raw)


async def revocations_endpoint(request: Request) -> Response:
    state = get_state(request)
    try:
        credentials = basic_credentials(request)
        if credentials is None:
            raise _unauthorized("client authentication (HTTP Basic) is required")
        client = state.config.client(credentials[0])
        if client is None or client.is_public or not client.check_secret(credentials[1]):
            raise _unauthorized("invalid client credentials")
        params = query_params(request)
        after = _integer(params, "after", 0, 0, _MAX_CURSOR)
        limit = _integer(params, "limit", DEFAULT_LIMIT, 1, MAX_PAGE)
    except OAuthError as e:
        return e.response()
    page = await state.repo.revocations_after(after, limit, now_s())
    return json_response(
        {
            "revocations": [{"sid": r.session_id, "revoked_at": r.revoked_at} for r in page.items],
            "cursor": str(page.next_cursor),
            "has_more": page.has_more,
            "retention": revocation_retention(state.config),
        }
    )
