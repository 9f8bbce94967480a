"""POST /oauth2/token: authorization_code (+PKCE), refresh_token, client_credentials."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from authgear.server import events
from authgear.server.config import ClientConfig
from authgear.server.http import (
    NO_STORE,
    OAuthError,
    basic_credentials,
    client_ip,
    rate_limited,
    read_form,
    user_agent,
)
from authgear.server.sessions import Issued, expiry, issue_tokens, new_grant, now_s
from authgear.server.state import ServerState, get_state
from authgear.server.storage import OfflineGrant, PreviousHash
from authgear.server.tokens import new_secret, sha256_hex, split_compound

VERIFIER_RE = re.compile(r"^[-._~A-Za-z0-9]{43,128}$")
# Superseded refresh-token hashes remembered for reuse detection.
MAX_PREVIOUS = 10


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authenticate_client(
    state: ServerState, request: Request, form: dict[str, str], *, required: bool = True
) -> ClientConfig | None:
    """RFC 6749 §2.3: credentials in the body win over HTTP Basic (parity with Authgear)."""
    basic = basic_credentials(request)
    client_id = form.get("client_id")
    secret = form.get("client_secret")
    used_basic = False
    if client_id is None and basic is not None:
        client_id, secret = basic
        used_basic = True
    elif basic is not None and secret is None and basic[0] == client_id:
        secret = basic[1]
        used_basic = True
    if not client_id:
        if not required:
            return None
        raise OAuthError("invalid_request", "client_id is required")
    client = state.config.client(client_id)
    if client is None:
        raise _invalid_client(used_basic, "invalid client ID")
    if not client.is_public and (secret is None or not client.check_secret(secret)):
        raise _invalid_client(used_basic, "invalid client credentials")
    return client


def _invalid_client(used_basic: bool, description: str) -> OAuthError:
    if used_basic:
        # RFC 6749 §5.2: a failed Basic authentication answers 401 with a challenge.
        return OAuthError(
            "invalid_client", description, 401, {"WWW-Authenticate": 'Basic realm="authgear"'}
        )
    return OAuthError("invalid_client", description)


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
        raise OAuthError("unsupported_grant_type", "unsupported grant type")
    except OAuthError as e:
        return e.response()


async def _authorization_code(
    state: ServerState, request: Request, form: dict[str, str]
) -> Response:
    client = authenticate_client(state, request, form)
    assert client is not None
    code = form.get("code")
    if not code:
        raise OAuthError("invalid_request", "code is required")
    redirect_uri = form.get("redirect_uri")
    verifier = form.get("code_verifier")
    now = now_s()
    code_hash = sha256_hex(code)
    record, first_use = await state.repo.claim_code(code_hash, now)
    if record is None or record.client_id != client.id:
        raise OAuthError("invalid_grant", "invalid authorization code")
    if not first_use:
        # A replayed code: revoke what its first exchange issued (RFC 6749 §4.1.2).
        await state.repo.revoke_code_issue(record)
        raise OAuthError("invalid_grant", "invalid authorization code")
    if record.expires_at <= now:
        raise OAuthError("invalid_grant", "invalid authorization code")
    if redirect_uri != record.redirect_uri:
        raise OAuthError("invalid_request", "invalid redirect URI")
    if record.code_challenge is not None or client.is_public:
        if not verifier:
            raise OAuthError("invalid_request", "PKCE code verifier is required")
        if (
            record.code_challenge is None
            or not VERIFIER_RE.match(verifier)
            or not hmac.compare_digest(s256(verifier), record.code_challenge)
        ):
            raise OAuthError("invalid_grant", "invalid PKCE code verifier")
    user = await state.repo.get_user(record.user_id)
    if user is None or user.disabled:
        raise OAuthError("invalid_grant", "invalid authorization code")
    await _limit_user(state, user.id)
    grant: OfflineGrant | None = None
    refresh_token: str | None = None
    if "offline_access" in record.scopes:
        grant, refresh_token = new_grant(
            client=client,
            user=user,
            idp_session_id=record.idp_session_id,
            scopes=record.scopes,
            auth_time=record.auth_time,
            amr=record.amr,
            request=request,
            trusted_proxies=state.config.trusted_proxies,
            device_info=_device_info(form.get("x_device_info")),
        )
    issued = await issue_tokens(
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
    )
    if grant is None and await state.repo.get_idp_session(record.idp_session_id) is None:
        # The browser session ended between authorize and exchange.
        raise OAuthError("invalid_grant", "invalid authorization code")
    await state.repo.exchange_code(code_hash, grant=grant, token=issued.record)
    return _token_response(issued, client, refresh_token)


async def _refresh_token(state: ServerState, request: Request, form: dict[str, str]) -> Response:
    client = authenticate_client(state, request, form)
    assert client is not None
    token = form.get("refresh_token")
    if not token:
        raise OAuthError("invalid_request", "refresh token is required")
    parts = split_compound(token)
    if parts is None:
        raise OAuthError("invalid_grant", "invalid refresh token")
    found = await state.repo.get_grant_and_user(parts[0])
    if found is None:
        raise OAuthError("invalid_grant", "invalid refresh token")
    grant, user = found
    now = now_s()
    presented = sha256_hex(parts[1])
    current = hmac.compare_digest(presented, grant.refresh_hash)
    previous = None
    if not current:
        previous = next(
            (p for p in grant.previous_hashes if hmac.compare_digest(presented, p.hash)), None
        )
        if previous is None:
            raise OAuthError("invalid_grant", "invalid refresh token")
    if grant.client_id != client.id:
        raise OAuthError("invalid_request", "client id doesn't match the refresh token")
    # With rotation, the successor of a refresh secret is derived from it, so the client's own
    # retry (a lost response, or two of its requests racing) gets the same successor.
    successor = _successor(state, grant.id, parts[1]) if client.refresh_token_rotation else None
    retry = previous is not None
    if previous is not None:
        in_grace = now - previous.superseded_at <= client.refresh_token_rotation_grace_period
        if not in_grace or successor is None or sha256_hex(successor) != grant.refresh_hash:
            # RFC 9700 §4.14.2: a rotated token used again; assume theft, end the grant.
            events.refresh_reuse(request, grant.id, user.id, client.id)
            await state.repo.delete_grant(grant.id)
            raise OAuthError("invalid_grant", "invalid refresh token")
    if grant.expires_at <= now:
        await state.repo.delete_grant(grant.id)
        raise OAuthError("invalid_grant", "invalid refresh token")
    if user.disabled:
        raise OAuthError("invalid_grant", "invalid refresh token")
    await _limit_user(state, user.id)

    issued = await issue_tokens(
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
    new_refresh = f"{grant.id}.{successor}" if successor is not None else None
    if retry:
        ok = await state.repo.add_access_token_and_touch(
            issued.record, grant.id, grant.refresh_hash, now
        )
    else:
        new_hash = sha256_hex(successor) if successor is not None else grant.refresh_hash
        history = grant.previous_hashes
        if successor is not None:
            history = [PreviousHash(grant.refresh_hash, now), *history][:MAX_PREVIOUS]
        idle = (
            client.refresh_token_idle_timeout if client.refresh_token_idle_timeout_enabled else None
        )
        ok = await state.repo.refresh_grant(
            grant.id,
            token=issued.record,
            expected_refresh_hash=grant.refresh_hash,
            refresh_hash=new_hash,
            previous_hashes=history,
            now=now,
            ip=client_ip(request, state.config.trusted_proxies),
            user_agent=user_agent(request),
            expires_at=expiry(grant.created_at, now, client.refresh_token_lifetime, idle),
        )
        if not ok and successor is not None:
            # A concurrent request with the same token rotated first: to the same successor.
            ok = await state.repo.add_access_token_and_touch(
                issued.record, grant.id, sha256_hex(successor), now
            )
    if not ok:
        raise OAuthError("invalid_grant", "invalid refresh token")
    state.touched[grant.id] = now
    return _token_response(issued, client, new_refresh)


def _device_info(raw: str | None) -> dict[str, Any]:
    """Authgear's native SDKs send ``x_device_info``: base64url JSON describing the device.
    Kept with the grant for the session list; anything malformed is ignored."""
    if not raw or len(raw) > 8192:
        return {}
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return decoded if isinstance(decoded, dict) else {}


async def _limit_user(state: ServerState, user_id: str) -> None:
    limit = state.config.rate_limits.token_per_user_per_minute
    if not await state.limiter.hit("token-user", user_id, limit, 60):
        raise rate_limited()


def _successor(state: ServerState, grant_id: str, secret: str) -> str:
    mac = hmac.new(state.rotation_key, f"{grant_id}.{secret}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


async def _client_credentials(
    state: ServerState, request: Request, form: dict[str, str]
) -> Response:
    client = authenticate_client(state, request, form)
    assert client is not None
    if client.is_public:
        raise OAuthError("unauthorized_client", "public clients cannot use client_credentials")
    scopes = [s for s in form.get("scope", "").split() if s]
    issued = await issue_tokens(
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
    await state.repo.add_access_token(issued.record)
    return _token_response(issued, client, None)
