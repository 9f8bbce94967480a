"""POST /oauth2/revoke (RFC 7009): 200 with an empty body, even for unknown tokens."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from authgear.server import events
from authgear.server.clock import now_s
from authgear.server.config import ClientConfig
from authgear.server.http import NO_STORE, OAuthError, read_form
from authgear.server.oauth.client_auth import authenticate_client
from authgear.server.state import ServerState, get_state
from authgear.server.tokens import sha256_hex, split_compound


async def revoke_endpoint(request: Request) -> Response:
    state = get_state(request)
    try:
        form = await read_form(request)
        client = authenticate_client(state, request, form, required=False)
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
    except OAuthError as e:
        return e.response()
    parts = split_compound(token)
    if parts is not None:
        grant = await state.repo.get_grant(parts[0])
        if grant is not None and (client is None or grant.client_id == client.id):
            presented = sha256_hex(parts[1])
            hashes = [grant.refresh_hash, *(p.hash for p in grant.previous_hashes)]
            if any(hmac.compare_digest(presented, h) for h in hashes):
                await state.repo.end_session(grant.id)
                events.session_revoked(grant.id, "offline_grant", grant.user_id, "client")
                return Response(status_code=200, headers=NO_STORE)
    if len(token) <= 8192:
        await _revoke_access_token(state, token, client)
    return Response(status_code=200, headers=NO_STORE)


async def _revoke_access_token(state: ServerState, token: str, client: ClientConfig | None) -> None:
    """An access token: userinfo and the resolver refuse it from now on. A JWT of ours is
    listed as revoked until it expires (it has no row); an opaque token's row is deleted."""
    record = state.token_reader.read(token, now_s())
    if record is not None:
        if client is None or record.client_id == client.id:
            await state.repo.revoke_token(record.token_hash, record.expires_at)
        return
    found = await state.repo.get_access_token(sha256_hex(token))
    if found is not None and (client is None or found[0].client_id == client.id):
        await state.repo.delete_access_token(found[0].token_hash)
