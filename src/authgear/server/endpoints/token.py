"""POST /oauth2/token (RFC 6749 §3.2): authorization_code with PKCE (RFC 7636),
refresh_token (rotation and reuse detection, RFC 9700 §4.14.2), client_credentials and the
device code (RFC 8628 §3.4, device_flow.py).

Every grant a client uses must be in its ``grant_types``; a code exchange checks everything
before it claims the code (RFC 9700 §2.1.1: no PKCE downgrade)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from authgear.server import device_flow, events
from authgear.server.config import DEVICE_CODE_GRANT, ClientConfig, is_user_scope
from authgear.server.http import (
    NO_STORE,
    OAuthError,
    client_ip,
    rate_limited,
    read_form,
    user_agent,
)
from authgear.server.oauth import pkce
from authgear.server.oauth.client_auth import authenticate_client
from authgear.server.sessions import (
    Issued,
    end_sessions_over_limit,
    expiry,
    issue_tokens,
    new_grant,
    now_s,
    revocation_retention,
    touch,
)
from authgear.server.state import ServerState, get_state
from authgear.server.storage import AuthCode, OfflineGrant, PreviousHash, User
from authgear.server.tokens import new_secret, sha256_hex, split_compound

# Superseded refresh-token hashes remembered for reuse detection.
MAX_PREVIOUS = 10
# x_device_info is a flat description of a device; a few levels leave room for Authgear's.
MAX_DEVICE_INFO_DEPTH = 5


def _token_response(issued: Issued, client: ClientConfig, refresh_token: str | None) -> Response:
    body: dict[str, object] = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": client.access_token_lifetime,
        "scope": issued.record.scope,
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    if issued.id_token is not None:
        body["id_token"] = issued.id_token
    return JSONResponse(body, headers=NO_STORE)


async def token_endpoint(request: Request) -> Response:
    state = get_state(request)
    limits = state.config.rate_limits
    ip = client_ip(request, state.config.trusted_proxies)
    try:
        if not await state.limiter.hit("token", ip, limits.token_per_ip_per_minute, 60):
            raise rate_limited()
        form = await read_form(request)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        events.token_request(request, grant_type)
        if grant_type == "authorization_code":
            return await _authorization_code(state, request, form)
        if grant_type == "refresh_token":
            return await _refresh_token(state, request, form)
        if grant_type == "client_credentials":
            return await _client_credentials(state, request, form)
        if grant_type == DEVICE_CODE_GRANT:
            return await _device_code(state, request, form)
        raise OAuthError("unsupported_grant_type", "unsupported grant type")
    except OAuthError as e:
        return e.response()


def _require_grant(client: ClientConfig, grant_type: str) -> None:
    if not client.allows(grant_type):
        raise OAuthError("unauthorized_client", f"this client cannot use {grant_type}")


def _check_code(
    record: AuthCode | None,
    client: ClientConfig,
    redirect_uri: str | None,
    verifier: str | None,
    now: int,
) -> AuthCode:
    """Every check of a code exchange (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 9700 §2.1.1), done
    before the code is claimed: a request failing any of them leaves the code to its owner."""
    if record is None or record.client_id != client.id or record.expires_at <= now:
        raise OAuthError("invalid_grant", "invalid authorization code")
    if redirect_uri != record.redirect_uri:
        raise OAuthError("invalid_grant", "invalid redirect URI")
    pkce.check_verifier(record.code_challenge, verifier, required=client.pkce_required)
    return record


async def _authorization_code(
    state: ServerState, request: Request, form: dict[str, str]
) -> Response:
    """RFC 6749 §4.1.3: every check first, then the code is claimed (once), the tokens are
    minted, and the exchange is written in one transaction."""
    client = _client_for(state, request, form, "authorization_code")
    code = form.get("code")
    if not code:
        raise OAuthError("invalid_request", "code is required")
    device_info = _device_info(form.get("x_device_info"))
    now = now_s()
    code_hash = sha256_hex(code)
    record, user = await _redeemable_code(state, client, form, code_hash, now)
    offline = "offline_access" in record.scopes and client.allows("refresh_token")
    if not offline and await state.repo.get_idp_session(record.idp_session_id) is None:
        # The tokens would belong to a browser session that has ended (or expired).
        raise OAuthError("invalid_grant", "invalid authorization code")
    await _limit_user(state, user.id)
    if not await state.repo.claim_code(code_hash, now):
        # Claimed by a concurrent exchange of the same code: that is a replay too.
        await _revoke_code_issue(state, code_hash)
        raise OAuthError("invalid_grant", "invalid authorization code")
    grant, refresh_token = (
        _grant_for_code(state, request, client, record, user, device_info)
        if offline
        else (None, None)
    )
    issued = issue_tokens(
        state,
        client=client,
        user=user,
        session_kind="offline" if grant else "idp",
        session_id=grant.id if grant else record.idp_session_id,
        sid=record.idp_session_id,
        scopes=record.scopes,
        auth_time=record.auth_time,
        amr=record.amr,
        nonce=record.nonce,
        acr=record.acr,
    )
    reauth = _reauth(record, user, client)
    # False when the browser session ended since the code was issued: ending a session deletes
    # its codes, and this checks (in the same transaction) that the code is still there.
    stored = issued.record.token_hash, issued.stored
    if not await state.repo.exchange_code(code_hash, grant, *stored, reauth=reauth):
        raise OAuthError("invalid_grant", "invalid authorization code")
    if grant is not None:
        await end_sessions_over_limit(state, user.id, grant.id)
    return _token_response(issued, client, refresh_token)


async def _revoke_code_issue(state: ServerState, code_hash: str) -> None:
    """A replayed code: what its first exchange issued is revoked (RFC 6749 §4.1.2), its
    access token until every token of ours has expired."""
    await state.repo.revoke_code_issue(code_hash, now_s() + revocation_retention(state.config))


def _reauth(record: AuthCode, user: User, client: ClientConfig) -> tuple[str, str, str, int] | None:
    """For a code from a re-authentication of an app's session (the ID token hint's ``sid``):
    that session, the user and client, and the new sign-in time the exchange moves the app
    session's ``authenticated_at`` to (repository.exchange_code)."""
    if not record.reauth_grant_id:
        return None
    return (record.reauth_grant_id, user.id, client.id, record.auth_time)


def _grant_for_code(
    state: ServerState,
    request: Request,
    client: ClientConfig,
    record: AuthCode,
    user: User,
    device_info: dict[str, Any],
) -> tuple[OfflineGrant, str]:
    """The app's own session (offline grant) and its refresh token, for offline_access."""
    return new_grant(
        client=client,
        user=user,
        idp_session_id=record.idp_session_id,
        scopes=record.scopes,
        auth_time=record.auth_time,
        amr=record.amr,
        request=request,
        trusted_proxies=state.config.trusted_proxies,
        device_info=device_info,
    )


def _client_for(
    state: ServerState, request: Request, form: dict[str, str], grant_type: str
) -> ClientConfig:
    client = authenticate_client(state, request, form)
    assert client is not None
    _require_grant(client, grant_type)
    return client


async def _redeemable_code(
    state: ServerState, client: ClientConfig, form: dict[str, str], code_hash: str, now: int
) -> tuple[AuthCode, User]:
    """The code this client may exchange, and its user. A replayed code revokes what its
    first exchange issued (RFC 6749 §4.1.2)."""
    record = _check_code(
        await state.repo.get_code(code_hash),
        client,
        form.get("redirect_uri"),
        form.get("code_verifier"),
        now,
    )
    if record.used_at is not None:
        await _revoke_code_issue(state, code_hash)
        raise OAuthError("invalid_grant", "invalid authorization code")
    user = await state.repo.get_user(record.user_id)
    if user is None or user.disabled:
        raise OAuthError("invalid_grant", "invalid authorization code")
    return record, user


async def _refresh_token(state: ServerState, request: Request, form: dict[str, str]) -> Response:
    """RFC 6749 §6, with rotation and reuse detection (RFC 9700 §4.14.2)."""
    client = _client_for(state, request, form, "refresh_token")
    token = form.get("refresh_token")
    if not token:
        raise OAuthError("invalid_request", "refresh token is required")
    grant, user, secret, previous = await _presented_grant(state, token)
    if grant.client_id != client.id:
        raise OAuthError("invalid_request", "client id doesn't match the refresh token")
    now = now_s()
    # With rotation, the successor of a refresh secret is derived from it, so the client's own
    # retry (a lost response, or two of its requests racing) gets the same successor.
    successor = _successor(state, grant.id, secret) if client.refresh_token_rotation else None
    if previous is not None:
        await _refuse_reuse(state, request, client, grant, user, previous, successor, now)
    if grant.expires_at <= now:
        await state.repo.end_session(grant.id)
        raise OAuthError("invalid_grant", "invalid refresh token")
    if user.disabled:
        raise OAuthError("invalid_grant", "invalid refresh token")
    await _limit_user(state, user.id)
    issued = issue_tokens(
        state,
        client=client,
        user=user,
        session_kind="offline",
        session_id=grant.id,
        sid=grant.idp_session_id,
        scopes=grant.scopes,
        auth_time=grant.authenticated_at,
        amr=grant.amr,
    )
    retry = previous is not None
    if not await _store_refresh(state, request, client, grant, issued, successor, retry, now):
        raise OAuthError("invalid_grant", "invalid refresh token")
    new_refresh = f"{grant.id}.{successor}" if successor is not None else None
    return _token_response(issued, client, new_refresh)


async def _device_code(state: ServerState, request: Request, form: dict[str, str]) -> Response:
    """RFC 8628 §3.4: a device's poll; pending, slow_down, expired_token, access_denied until
    the user decides, then the tokens, once (device_flow.redeem)."""
    client = _client_for(state, request, form, DEVICE_CODE_GRANT)
    device_info = _device_info(form.get("x_device_info"))
    issued, refresh_token = await device_flow.redeem(
        state, request, client, form.get("device_code"), device_info
    )
    return _token_response(issued, client, refresh_token)


async def _presented_grant(
    state: ServerState, token: str
) -> tuple[OfflineGrant, User, str, PreviousHash | None]:
    """The grant and user of a refresh token ``<grant id>.<secret>``, its secret, and the
    superseded hash it matched (None: it is the current one)."""
    parts = split_compound(token)
    if parts is None:
        raise OAuthError("invalid_grant", "invalid refresh token")
    found = await state.repo.get_grant_and_user(parts[0])
    if found is None:
        raise OAuthError("invalid_grant", "invalid refresh token")
    grant, user = found
    presented = sha256_hex(parts[1])
    if hmac.compare_digest(presented, grant.refresh_hash):
        return grant, user, parts[1], None
    previous = next(
        (p for p in grant.previous_hashes if hmac.compare_digest(presented, p.hash)), None
    )
    if previous is None:
        raise OAuthError("invalid_grant", "invalid refresh token")
    return grant, user, parts[1], previous


async def _refuse_reuse(
    state: ServerState,
    request: Request,
    client: ClientConfig,
    grant: OfflineGrant,
    user: User,
    previous: PreviousHash,
    successor: str | None,
    now: int,
) -> None:
    """A superseded refresh token is only a retry of the client's own rotation: within the
    grace period, and its successor is the grant's current token. Anything else is reuse
    (RFC 9700 §4.14.2): assume theft, end the grant."""
    in_grace = now - previous.superseded_at <= client.refresh_token_rotation_grace_period
    if not in_grace or successor is None or sha256_hex(successor) != grant.refresh_hash:
        events.refresh_reuse(request, grant.id, user.id, client.id)
        await state.repo.end_session(grant.id)
        raise OAuthError("invalid_grant", "invalid refresh token")


async def _store_refresh(
    state: ServerState,
    request: Request,
    client: ClientConfig,
    grant: OfflineGrant,
    issued: Issued,
    successor: str | None,
    retry: bool,
    now: int,
) -> bool:
    """Write what a refresh changes; False when the grant changed under us in a way that is
    not the same rotation.

    Without rotation (and for a retry of a rotation already done) nothing changes: a JWT
    access token carries its grant's id and needs no row, so the refresh writes nothing but
    the grant's activity, at most once a minute (touch). With rotation, one compare-and-set
    UPDATE of the grant. An opaque access token's row is written either way."""
    if successor is None or retry:
        await touch(state, request, "offline", grant.id, client)
        ok = True
    else:
        ok = await _rotate(state, request, client, grant, successor, now)
    if ok and issued.stored is not None:
        await state.repo.add_access_token(issued.stored)
    return ok


async def _rotate(
    state: ServerState,
    request: Request,
    client: ClientConfig,
    grant: OfflineGrant,
    successor: str,
    now: int,
) -> bool:
    new_hash = sha256_hex(successor)
    history = [PreviousHash(grant.refresh_hash, now), *grant.previous_hashes][:MAX_PREVIOUS]
    idle = client.refresh_token_idle_timeout if client.refresh_token_idle_timeout_enabled else None
    ok = await state.repo.refresh_grant(
        grant.id,
        expected_refresh_hash=grant.refresh_hash,
        refresh_hash=new_hash,
        previous_hashes=history,
        now=now,
        ip=client_ip(request, state.config.trusted_proxies),
        user_agent=user_agent(request),
        expires_at=expiry(grant.created_at, now, client.refresh_token_lifetime, idle),
    )
    if ok:
        state.touched[grant.id] = now  # the rotation recorded the activity
        return True
    # A concurrent request with the same token rotated first: to the same successor?
    current = await state.repo.get_grant(grant.id)
    return current is not None and hmac.compare_digest(current.refresh_hash, new_hash)


def _device_info(raw: str | None) -> dict[str, Any]:
    """Authgear's native SDKs send ``x_device_info``: base64url JSON describing the device.
    Kept with the grant for the session list; anything malformed or deeper than
    MAX_DEVICE_INFO_DEPTH is ignored (deep nesting would exhaust the parser's recursion)."""
    if not raw or len(raw) > 8192:
        return {}
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return {}
    if not isinstance(decoded, dict) or _depth(decoded) > MAX_DEVICE_INFO_DEPTH:
        return {}
    return decoded


def _depth(value: object) -> int:
    """How deeply JSON containers nest (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level > MAX_DEVICE_INFO_DEPTH:
                return level
            stack.extend((child, level + 1) for child in item)
    return deepest


async def _limit_user(state: ServerState, user_id: str) -> None:
    limit = state.config.rate_limits.token_per_user_per_minute
    if not await state.limiter.hit("token-user", user_id, limit, 60):
        raise rate_limited()


def _successor(state: ServerState, grant_id: str, secret: str) -> str:
    mac = hmac.new(state.rotation_key, f"{grant_id}.{secret}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def _client_scopes(client: ClientConfig, asked: str | None) -> list[str]:
    """The scopes of a client_credentials token: what was asked (or, if nothing, every allowed
    scope, RFC 6749 §3.3), each in the client's allowed_scopes and none a user scope."""
    scopes = (
        list(dict.fromkeys(asked.split())) if asked is not None else list(client.allowed_scopes)
    )
    if any(is_user_scope(s) for s in scopes):
        raise OAuthError(
            "invalid_scope", "a client_credentials token cannot carry openid or user scopes"
        )
    if any(s not in client.allowed_scopes for s in scopes):
        raise OAuthError("invalid_scope", "a scope is not in this client's allowed_scopes")
    return scopes


async def _client_credentials(
    state: ServerState, request: Request, form: dict[str, str]
) -> Response:
    client = authenticate_client(state, request, form)
    assert client is not None
    if client.is_public:
        raise OAuthError("unauthorized_client", "public clients cannot use client_credentials")
    _require_grant(client, "client_credentials")
    scopes = _client_scopes(client, form.get("scope"))
    issued = issue_tokens(
        state,
        client=client,
        user=None,
        session_kind="client",
        session_id=new_secret()[:36],
        sid=None,
        scopes=scopes,
        auth_time=None,
        amr=[],
        with_id_token=False,
    )
    if issued.stored is not None:
        await state.repo.add_access_token(issued.stored)
    return _token_response(issued, client, None)
