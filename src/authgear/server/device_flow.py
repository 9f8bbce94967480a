"""The device authorization grant (RFC 8628) between its endpoints, the /device page and the
sign-in flow: make a code pair, take a typed user code, record the user's decision, answer a
poll, and issue the tokens once.

Guessing a user code (RFC 8628 §5.1) is bounded twice, each counted *before* the code is
looked up and given back when it was right: per IPv4 address or IPv6 /64
(``rate_limits.device_code_failures_per_ip_per_hour``, in the shared rate limiter), and per
device code: a shared counter of failed entries (table ``counters``) is read when a code is
made, and once more than ``device_authorization.max_failed_entries`` entries have failed since,
that code can no longer be approved, however many addresses the guesses came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from authgear.server import events
from authgear.server.admin.present import describe_user_agent, full_time, relative_time
from authgear.server.config import ClientConfig
from authgear.server.http import OAuthError, client_ip, user_agent
from authgear.server.keys import MFA_KEY, KeyCipher, load_server_secret
from authgear.server.ratelimit import ip_bucket
from authgear.server.security import user_codes
from authgear.server.sessions import Issued, end_sessions_over_limit, issue_tokens, new_grant, now_s
from authgear.server.state import ServerState
from authgear.server.storage import IdpSession, User
from authgear.server.storage.devices import (
    APPROVED,
    DENIED,
    ISSUED,
    PENDING,
    DeviceCode,
)
from authgear.server.tokens import new_id, new_secret, sha256_hex

VERIFICATION_PATH = "/device"
# A flood of polls grows the interval 5 s at a time up to this (RFC 8628 §3.5 sets no cap).
MAX_INTERVAL = 60
FAILURE_BUCKET = "device-code-failure"
FAILURE_WINDOW = 3600
# A new code collides with a stored one about once in 20^8 / (codes stored): retry a few times.
ATTEMPTS_TO_MAKE = 5
MAX_DEVICE_CODE = 200

WRONG_CODE = "That code is not valid. Check the code shown on your device: it may have expired."
TOO_MANY = "Too many wrong codes were entered from your network. Try again in an hour."

# What each scope lets the device do, for the approval page.
SCOPE_TEXT = {
    "openid": "Know who you are (your user ID)",
    "offline_access": "Stay signed in on that device until you sign it out",
    "email": "See your email address",
    "profile": "See your profile",
    "phone": "See your phone number",
    "address": "See your address",
    "https://authgear.com/scopes/full-access": "Act as you in the app, with full access",
    "https://authgear.com/scopes/full-userinfo": "See all of your user information",
}


@dataclass(frozen=True, slots=True)
class Refused:
    """A typed user code that leads nowhere: the message for the page and its status."""

    message: str
    status: int


# -- pure parts --------------------------------------------------------------------------------


def requested_scopes(client: ClientConfig, raw: str | None, supported: frozenset[str]) -> list[str]:
    """The scopes of a device authorization request, by the authorization endpoint's rules:
    ``openid`` required (Authgear's tokens are a user's sign-in), each scope known, repeats
    dropped, and ``offline_access`` ignored for a client without the refresh_token grant
    (OIDC Core §11)."""
    scopes = list(dict.fromkeys((raw or "").split()))
    if "openid" not in scopes:
        raise OAuthError("invalid_scope", "scope must contain openid")
    unknown = [s for s in scopes if s not in supported]
    if unknown:
        raise OAuthError("invalid_scope", f"unsupported scope: {unknown[0][:60]}")
    if "offline_access" in scopes and not client.allows("refresh_token"):
        scopes = [s for s in scopes if s != "offline_access"]
    return scopes


def authorization_body(
    issuer: str, device_code: str, user_code: str, code: DeviceCode
) -> dict[str, Any]:
    """The device authorization response (RFC 8628 §3.2)."""
    shown = user_codes.display(user_code)
    page = issuer + VERIFICATION_PATH
    return {
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": page,
        "verification_uri_complete": f"{page}?{urlencode({'user_code': shown})}",
        "expires_in": code.expires_at - code.created_at,
        "interval": code.poll_interval,
    }


def poll_error(code: DeviceCode | None, now: int) -> OAuthError | None:
    """The answer to a poll (RFC 8628 §3.5) of the code as :meth:`DeviceCodeStore.poll` left
    it, or None when it is approved and the tokens are due. Final answers come first (a client
    told to stop need not slow down); a poll sooner than the interval is then ``slow_down``,
    whatever the code's state, so polling faster never learns anything sooner."""
    if code is None or code.status == ISSUED:
        return OAuthError("invalid_grant", "invalid device code")
    if code.expires_at <= now:
        return OAuthError("expired_token", "the device code has expired")
    if code.status == DENIED:
        return OAuthError("access_denied", "the user denied the sign-in")
    if code.last_poll_too_fast:
        return OAuthError("slow_down", f"poll every {code.poll_interval} seconds")
    if code.status == PENDING:
        return OAuthError("authorization_pending", "the user has not approved the sign-in yet")
    if code.status != APPROVED:
        return OAuthError("invalid_grant", "invalid device code")
    return None


def describe(state: ServerState, code: DeviceCode, now: int) -> dict[str, Any]:
    """What the approval page shows: which app asks for what, and when and from where."""
    client = state.config.client(code.client_id)
    return {
        "client_name": (client.name or client.id) if client is not None else code.client_id,
        "scopes": [SCOPE_TEXT.get(s, s) for s in code.scopes],
        "requested_at": full_time(code.created_at),
        "requested_ago": relative_time(code.created_at, now),
        "expires_in": relative_time(code.expires_at, now),
        "request_ip": code.request_ip,
        "request_device": describe_user_agent(code.request_user_agent),
    }


# -- the device authorization endpoint ----------------------------------------------------------


async def user_code_key(state: ServerState) -> bytes:
    if state.mfa_key is None:
        cipher = KeyCipher.from_config(state.config)
        state.mfa_key = await load_server_secret(state.repo, MFA_KEY, cipher)
    return user_codes.derive_key(state.mfa_key)


async def start(
    state: ServerState, request: Request, client: ClientConfig, scopes: list[str]
) -> tuple[str, str, DeviceCode]:
    """Store a new code pair for ``client``: (device code, user code, the stored row)."""
    cfg = state.config.device_authorization
    key = await user_code_key(state)
    base = await state.device_codes.failed_entries()
    now = now_s()
    for _ in range(ATTEMPTS_TO_MAKE):
        device_code, user_code = new_secret(), user_codes.new_user_code()
        code = DeviceCode(
            id=new_id(),
            device_code_hash=sha256_hex(device_code),
            user_code_hash=user_codes.user_code_hash(key, user_code),
            client_id=client.id,
            scopes=scopes,
            created_at=now,
            expires_at=now + cfg.lifetime,
            poll_interval=cfg.interval,
            last_poll_at=None,
            last_poll_too_fast=False,
            status=PENDING,
            failures_base=base,
            request_ip=client_ip(request, state.config.trusted_proxies),
            request_user_agent=user_agent(request),
        )
        if await state.device_codes.add(code):
            return device_code, user_code, code
    raise OAuthError("temporarily_unavailable", "no user code could be made; try again", 503)


# -- the /device page ---------------------------------------------------------------------------


async def enter(state: ServerState, request: Request, typed: str | None) -> DeviceCode | Refused:
    """A user code typed at /device: the pending code it names, or why not. Both guess limits
    are counted before the lookup; a right code gives both back."""
    normalized = user_codes.normalize(typed)
    if normalized is None:
        # Not the shape of a code: it can match nothing, so there is nothing to count.
        return Refused(WRONG_CODE, 400)
    ip = ip_bucket(client_ip(request, state.config.trusted_proxies))
    limit = state.config.rate_limits.device_code_failures_per_ip_per_hour
    if not await state.limiter.hit(FAILURE_BUCKET, ip, limit, FAILURE_WINDOW):
        events.device_code_refused(request)
        return Refused(TOO_MANY, 429)
    failed = await state.device_codes.count_entry()
    digest = user_codes.user_code_hash(await user_code_key(state), normalized)
    found = await state.device_codes.pending_by_user_code(digest, now_s())
    budget = state.config.device_authorization.max_failed_entries
    # ``failed`` counts this entry too: the code is dead once more than ``budget`` others
    # failed since it was made.
    if found is None or failed - found.failures_base > budget:
        events.device_code_failed(request)
        return Refused(WRONG_CODE, 400)
    await state.limiter.refund(FAILURE_BUCKET, ip, FAILURE_WINDOW)
    await state.device_codes.uncount_entry()
    events.device_code_entered(request)
    return found


async def pending(state: ServerState, code_id: str) -> DeviceCode | None:
    """The code a device approval is about, while it can still be decided."""
    code = await state.device_codes.get(code_id) if code_id else None
    if code is None or code.status != PENDING or code.expires_at <= now_s():
        return None
    client = state.config.client(code.client_id)
    return code if client is not None else None


async def settle(
    state: ServerState,
    request: Request,
    code_id: str,
    *,
    approve: bool,
    session: IdpSession,
    user: User,
) -> bool:
    """The signed-in user's decision; the tokens will carry this browser session's
    ``auth_time`` and ``amr``. False when the code was decided already or has expired."""
    decided = await state.device_codes.decide(
        code_id,
        approve=approve,
        user_id=user.id,
        idp_session_id=session.id,
        auth_time=session.authenticated_at,
        amr=list(session.amr),
        now=now_s(),
    )
    if decided:
        events.device_decided(request, code_id, user.id, approve)
    return decided


# -- the token endpoint -------------------------------------------------------------------------


async def redeem(
    state: ServerState,
    request: Request,
    client: ClientConfig,
    device_code: str | None,
    device_info: dict[str, Any],
) -> tuple[Issued, str | None]:
    """A poll of the token endpoint (RFC 8628 §3.4-3.5): an OAuthError until the code is
    approved, then the tokens (access, ID, and a refresh token with ``offline_access``), once.
    A code of another client is ``invalid_grant`` and its row is left untouched."""
    if not device_code:
        raise OAuthError("invalid_request", "device_code is required")
    if len(device_code) > MAX_DEVICE_CODE:
        raise OAuthError("invalid_grant", "invalid device code")
    now = now_s()
    code = await state.device_codes.poll(sha256_hex(device_code), client.id, now, MAX_INTERVAL)
    error = poll_error(code, now)
    if error is not None:
        raise error
    assert code is not None
    return await _issue(state, request, client, code, device_info, now)


async def _issue(
    state: ServerState,
    request: Request,
    client: ClientConfig,
    code: DeviceCode,
    device_info: dict[str, Any],
    now: int,
) -> tuple[Issued, str | None]:
    user = await state.repo.get_user(code.user_id) if code.user_id else None
    if user is None or user.disabled or code.idp_session_id is None or code.auth_time is None:
        raise OAuthError("invalid_grant", "invalid device code")
    # Like a code exchange: an app session (offline grant) with offline_access, else tokens of
    # the approving browser session.
    grant, refresh_token = None, None
    if "offline_access" in code.scopes and client.allows("refresh_token"):
        grant, refresh_token = new_grant(
            client=client,
            user=user,
            idp_session_id=code.idp_session_id,
            scopes=code.scopes,
            auth_time=code.auth_time,
            amr=code.amr,
            request=request,
            trusted_proxies=state.config.trusted_proxies,
            device_info=device_info,
        )
    issued = issue_tokens(
        state,
        client=client,
        user=user,
        session_kind="offline" if grant else "idp",
        session_id=grant.id if grant else code.idp_session_id,
        sid=code.idp_session_id,
        scopes=code.scopes,
        auth_time=code.auth_time,
        amr=code.amr,
    )
    if not await state.device_codes.issue(
        code.id,
        grant=grant,
        token=issued.stored,
        browser_session=None if grant else code.idp_session_id,
        now=now,
    ):
        raise OAuthError("invalid_grant", "invalid device code")
    if grant is not None:
        await end_sessions_over_limit(state, user.id, grant.id)
    return issued, refresh_token
