"""IdP sessions (the login cookie), offline grants and access tokens: create, check, revoke."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authgear.server.clock import now_s as now_s
from authgear.server.config import ClientConfig, ServerConfig
from authgear.server.http import client_ip, user_agent
from authgear.server.state import ServerState
from authgear.server.storage import AccessTokenRecord, IdpSession, OfflineGrant, User
from authgear.server.storage.admin import Actor
from authgear.server.tokens import (
    CLAIM_GRANT_TYPE,
    CLIENT_CREDENTIALS_GTY,
    ID_TOKEN_LIFETIME,
    new_id,
    new_secret,
    sha256_hex,
    split_compound,
    user_claims,
)

# Activity is written at most this often per session (the idle timeout is days, not seconds).
ACTIVITY_INTERVAL = 60


# Revocation feed rows outlive the longest access-token lifetime by this much (clock skew).
REVOCATION_RETENTION_MARGIN = 60


def revocation_retention(config: ServerConfig) -> int:
    """Seconds a revocation feed row matters: the longest access-token lifetime of any client,
    plus a margin; then every token it could refuse has expired, and housekeeping purges it."""
    longest = max((c.access_token_lifetime for c in config.clients), default=0)
    return max(longest, 300) + REVOCATION_RETENTION_MARGIN


def expiry(created_at: int, now: int, lifetime: int, idle_timeout: int | None) -> int:
    absolute = created_at + lifetime
    return absolute if idle_timeout is None else min(absolute, now + idle_timeout)


# -- IdP session cookie ---------------------------------------------------------------------


async def create_idp_session(
    state: ServerState, request: Request, user: User, amr: list[str]
) -> tuple[IdpSession, str]:
    now = now_s()
    cfg = state.config.session
    secret = new_secret()
    session = IdpSession(
        id=new_id(),
        user_id=user.id,
        secret_hash=sha256_hex(secret),
        created_at=now,
        authenticated_at=now,
        amr=amr,
        last_access_at=now,
        last_access_ip=client_ip(request, state.config.trusted_proxies),
        last_access_user_agent=user_agent(request),
        expires_at=expiry(
            now, now, cfg.lifetime, cfg.idle_timeout if cfg.idle_timeout_enabled else None
        ),
    )
    await state.repo.create_idp_session(session)
    await end_sessions_over_limit(state, user.id, session.id)
    return session, f"{session.id}.{secret}"


SESSION_LIMIT_ACTOR = Actor("system", "session.max_per_user", "Session limit")


async def end_sessions_over_limit(state: ServerState, user_id: str, newest: str) -> None:
    """A user has at most ``session.max_per_user`` live sessions (browser sessions and app
    grants together): past it, the least recently used end, like a revocation, with an audit
    entry each. Otherwise whoever knows the password could add rows without bound."""
    now = now_s()
    ended = await state.admin.end_least_recent_sessions(
        user_id, state.config.session.max_per_user, now, newest=newest
    )
    for record in ended:
        await state.admin.audit(
            SESSION_LIMIT_ACTOR,
            "session.evict",
            now,
            target_type="session",
            target_id=record.id,
            details={
                "user_id": record.user_id,
                "kind": record.kind,
                "client_id": record.client_id,
                "reason": "max_per_user",
            },
        )


def set_session_cookie(state: ServerState, response: Response, value: str) -> None:
    response.set_cookie(
        state.config.session.cookie_name,
        value,
        max_age=state.config.session.lifetime,
        path="/",
        httponly=True,
        samesite="lax",
        secure=state.config.secure_cookies,
    )


def clear_session_cookie(state: ServerState, response: Response) -> None:
    response.delete_cookie(
        state.config.session.cookie_name,
        path="/",
        httponly=True,
        samesite="lax",
        secure=state.config.secure_cookies,
    )


async def session_from_cookie(
    state: ServerState, request: Request
) -> tuple[IdpSession, User] | None:
    raw = request.cookies.get(state.config.session.cookie_name)
    if not raw:
        return None
    parts = split_compound(raw)
    if parts is None:
        return None
    session = await state.repo.get_idp_session(parts[0])
    if session is None or not hmac.compare_digest(session.secret_hash, sha256_hex(parts[1])):
        return None
    if session.expires_at <= now_s():
        return None
    user = await state.repo.get_user(session.user_id)
    if user is None or user.disabled:
        return None
    return session, user


async def touch(
    state: ServerState, request: Request, kind: str, session_id: str, client: ClientConfig | None
) -> None:
    """Record session activity (extends the idle timeout), at most once a minute per session."""
    now = now_s()
    if now - state.touched.get(session_id, 0) < ACTIVITY_INTERVAL:
        return
    state.touched[session_id] = now
    if len(state.touched) > 100_000:
        state.touched.clear()
    if kind == "idp":
        cfg = state.config.session
        lifetime, idle = cfg.lifetime, cfg.idle_timeout if cfg.idle_timeout_enabled else None
    elif client is not None:
        lifetime = client.refresh_token_lifetime
        idle = (
            client.refresh_token_idle_timeout if client.refresh_token_idle_timeout_enabled else None
        )
    else:
        return
    await state.repo.touch_session(
        kind,
        session_id,
        now=now,
        ip=client_ip(request, state.config.trusted_proxies),
        user_agent=user_agent(request),
        lifetime=lifetime,
        idle_timeout=idle,
        min_interval=ACTIVITY_INTERVAL,
    )


# -- access tokens --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issued:
    access_token: str
    record: AccessTokenRecord
    id_token: str | None
    opaque: bool = False

    def __repr__(self) -> str:
        return f"Issued(jti={self.record.jti!r})"

    @property
    def stored(self) -> AccessTokenRecord | None:
        """The row to write with the tokens: an opaque access token's record (nothing else says
        what it is); None for a JWT, which carries its session's id instead."""
        return self.record if self.opaque else None


def _user_claims(user: User | None) -> dict[str, Any]:
    if user is None:
        return {}
    return user_claims(
        is_anonymous=False,
        is_verified=user.email_verified,
        can_reauthenticate=user.can_reauthenticate,
        roles=list(user.roles),
    )


def issue_tokens(
    state: ServerState,
    *,
    client: ClientConfig,
    user: User | None,
    session_kind: str,
    session_id: str,
    sid: str | None,
    scopes: list[str],
    auth_time: int | None,
    amr: list[str],
    nonce: str | None = None,
    with_id_token: bool = True,
    acr: str | None = None,
) -> Issued:
    """Mint an access token (JWT or opaque) and, for OpenID requests, an ID token. Nothing is
    stored here: for an opaque token the caller writes ``Issued.stored`` in the transaction
    that decides whether the tokens count (a code's exchange, a grant's refresh)."""
    now = now_s()
    # The record first (without its hash): the access token's claims are read from it.
    unsigned = AccessTokenRecord(
        token_hash="",
        jti=new_id(),
        session_kind=session_kind,
        session_id=session_id,
        user_id=user.id if user else None,
        client_id=client.id,
        scope=" ".join(scopes),
        auth_time=auth_time,
        amr=amr,
        issued_at=now,
        expires_at=now + client.access_token_lifetime,
    )
    # Signed inline: `cryptography` holds the GIL while it signs (two threads sign no faster
    # than one), so a thread would only add a hand-off; `--workers` puts more cores to work.
    if client.access_token_format == "jwt":
        claims = _access_token_claims(state.issuer, client, user, unsigned, acr)
        access_token = state.keys.sign(claims, "at+jwt")
    else:
        access_token = new_secret()
    id_token: str | None = None
    if with_id_token and user is not None and "openid" in scopes:
        claims = _id_token_claims(state.issuer, client, user, sid, auth_time, amr, acr, nonce, now)
        id_token = state.keys.sign(claims, "JWT")
    record = replace(unsigned, token_hash=sha256_hex(access_token))
    return Issued(access_token, record, id_token, client.access_token_format != "jwt")


def _auth_claims(amr: list[str], acr: str | None) -> dict[str, Any]:
    """How the user signed in, as both tokens carry it: ``amr`` when there is one, ``acr``
    when a requested one was satisfied."""
    return {**({"amr": amr} if amr else {}), **({"acr": acr} if acr else {})}


def _access_token_claims(
    issuer: str,
    client: ClientConfig,
    user: User | None,
    record: AccessTokenRecord,
    acr: str | None,
) -> dict[str, Any]:
    """A JWT access token's claims (RFC 9068)."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": [issuer],
        "sub": user.id if user else client.id,
        "client_id": client.id,
        "scope": record.scope,
        "iat": record.issued_at,
        "exp": record.expires_at,
        "jti": record.jti,
    }
    if record.session_kind == "client":
        # A client acting for itself: recognisably not a user's token (Auth0's `gty`), so
        # that backends never take it for a user (no auth_time, no user claims).
        claims[CLAIM_GRANT_TYPE] = CLIENT_CREDENTIALS_GTY
        return claims
    # The session the token belongs to (an app's grant, or the browser session for a token
    # without offline_access): JWT-mode backends refuse it once the revocation feed lists
    # that session. Authgear's own access tokens carry no sid; ours add it.
    claims["sid"] = record.session_id
    if record.auth_time is not None:
        claims["auth_time"] = record.auth_time
    claims.update(_auth_claims(record.amr, acr))
    claims.update(_user_claims(user))
    return claims


def _id_token_claims(
    issuer: str,
    client: ClientConfig,
    user: User,
    sid: str | None,
    auth_time: int | None,
    amr: list[str],
    acr: str | None,
    nonce: str | None,
    now: int,
) -> dict[str, Any]:
    """An ID token's claims (OpenID Connect Core §2), ``sid`` per Front/Back-Channel Logout."""
    return {
        "iss": issuer,
        "aud": client.id,
        "sub": user.id,
        "iat": now,
        "exp": now + ID_TOKEN_LIFETIME,
        "auth_time": auth_time,
        **_auth_claims(amr, acr),
        **({"sid": sid} if sid else {}),
        **({"nonce": nonce} if nonce else {}),
        **_user_claims(user),
    }


@dataclass(frozen=True, slots=True)
class ValidToken:
    record: AccessTokenRecord
    user: User


@dataclass(frozen=True, slots=True)
class ValidClientToken:
    """A client_credentials token: the client itself, no user."""

    record: AccessTokenRecord
    client: ClientConfig


async def resolve_access_token(
    state: ServerState, token: str
) -> ValidToken | ValidClientToken | None:
    """A token we issued, unexpired, and still backed: a user's (its session and user exist,
    the session has not expired, the user is enabled, the token was not revoked) or a client's
    own (the client is still a configured confidential one, the token was not revoked).

    A JWT access token is read from itself (its signature by one of our keys), an opaque one
    (or a JWT from before tokens carried ``sid``) from its row, by the SHA-256 of the token.
    Either way its session is read on every use: ending a session refuses its tokens at once.
    """
    if not token or len(token) > 8192:
        return None
    now = now_s()
    record = state.token_reader.read(token, now)
    user: User | None = None
    if record is None:
        found = await state.repo.get_access_token(sha256_hex(token))
        if found is None or found[0].expires_at <= now:
            return None
        record, user = found
    if record.session_kind == "client":
        client = state.config.client(record.client_id)
        if client is None or client.is_public:
            return None
        if await state.repo.is_token_revoked(record.token_hash):
            return None
        return ValidClientToken(record, client)
    if record.user_id is None:
        return None
    found_session = await state.repo.get_token_session(
        record.session_id, record.user_id, record.client_id, record.token_hash
    )
    if found_session is None or found_session.kind is None or found_session.revoked:
        return None
    user = found_session.user
    if found_session.expires_at <= now or user.disabled:
        return None
    if record.session_kind != found_session.kind:
        record = replace(record, session_kind=found_session.kind)
    return ValidToken(record, user)


async def validate_access_token(state: ServerState, token: str) -> ValidToken | None:
    """A user's token (see :func:`resolve_access_token`); None for a client's own token."""
    valid = await resolve_access_token(state, token)
    return valid if isinstance(valid, ValidToken) else None


def new_grant(
    *,
    client: ClientConfig,
    user: User,
    idp_session_id: str | None,
    scopes: list[str],
    auth_time: int,
    amr: list[str],
    request: Request,
    trusted_proxies: tuple[str, ...],
    device_info: dict[str, Any] | None = None,
) -> tuple[OfflineGrant, str]:
    """A new offline grant and its refresh token ``<grant_id>.<secret>``."""
    now = now_s()
    secret = new_secret()
    idle = client.refresh_token_idle_timeout if client.refresh_token_idle_timeout_enabled else None
    grant = OfflineGrant(
        id=new_id(),
        user_id=user.id,
        client_id=client.id,
        idp_session_id=idp_session_id,
        scopes=scopes,
        refresh_hash=sha256_hex(secret),
        previous_hashes=[],
        created_at=now,
        authenticated_at=auth_time,
        amr=amr,
        last_access_at=now,
        last_access_ip=client_ip(request, trusted_proxies),
        last_access_user_agent=user_agent(request),
        device_info=device_info or {},
        expires_at=expiry(now, now, client.refresh_token_lifetime, idle),
    )
    return grant, f"{grant.id}.{secret}"
