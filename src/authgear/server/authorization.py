"""The authorization response (RFC 6749 §4.1.2): the validated request a sign-in serves, and
handing the user back to the client with a code (or an error) in the requested response mode.
Shared by /oauth2/authorize (a live session) and the sign-in flow's finish (signin/finish.py)."""

from __future__ import annotations

import html
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from starlette.responses import HTMLResponse, RedirectResponse, Response

from authgear.server.config import ClientConfig
from authgear.server.keys import ALGORITHM
from authgear.server.security import redirect_uris
from authgear.server.sessions import now_s
from authgear.server.state import ServerState
from authgear.server.storage import AuthCode, IdpSession, User
from authgear.server.tokens import new_secret, sha256_hex

# OpenID PAPE's multi-factor policy: the acr an app asks for to demand a second factor.
MFA_ACR = "http://schemas.openid.net/pape/policies/2007/06/multi-factor"


def redirect_uri_allowed(client: ClientConfig, uri: str) -> bool:
    """RFC 9700 §2.1 exact match; a public client's loopback IP literal registered without a
    port matches any port (RFC 8252 §7.3). See security/redirect_uris.py."""
    return (
        redirect_uris.match(client.redirect_uris, uri, loopback_any_port=client.is_public)
        is not None
    )


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated authorization request; stored as the login flow while the user signs in."""

    client_id: str
    redirect_uri: str
    response_type: str
    response_mode: str
    scopes: list[str]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    prompt: list[str]
    max_age: int | None
    login_hint: str | None
    ui_locales: str | None
    page: str
    # OIDC Core §3.1.2.1; only MFA_ACR has a meaning here (signin/policy.py).
    acr_values: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuthorizationRequest:
        return cls(**data)


def redirect_back(
    state: ServerState,
    redirect_uri: str,
    mode: str,
    values: dict[str, str | None],
) -> Response:
    """Answer the client: query, fragment or form_post; always with the RFC 9207 ``iss``.

    ``redirect_uri`` is the string the client asked for, validated by parse_request: every
    mode uses it as it is (never re-serialized by another parser)."""
    data = {k: v for k, v in values.items() if v is not None}
    data["iss"] = state.issuer
    if mode == "form_post":
        return _form_post(redirect_uri, data)
    encoded = urlencode(data)
    if mode == "fragment":
        target = f"{redirect_uri}#{encoded}"
    else:
        target = redirect_uris.add_query(redirect_uri, encoded)
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


def _form_post(redirect_uri: str, data: dict[str, str]) -> Response:
    """OAuth 2.0 Form Post Response Mode: a page that posts the response to the client.

    Its CSP allows a form submission only to the redirect URI's origin, so even a browser that
    read the action differently from us would not send the code anywhere else."""
    nonce = secrets.token_urlsafe(16)
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in data.items()
    )
    body = (
        "<!doctype html><html><head><title>Continue</title></head><body>"
        f'<form method="post" action="{html.escape(redirect_uri)}">{inputs}'
        '<noscript><button type="submit">Continue</button></noscript></form>'
        f'<script nonce="{nonce}">document.forms[0].submit()</script></body></html>'
    )
    target = redirect_uris.parse(redirect_uri)
    return HTMLResponse(
        body,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; "
                f"form-action {_csp_source(target)}; base-uri 'none'; frame-ancestors 'none'"
            ),
            "Referrer-Policy": "no-referrer",
        },
    )


def _csp_source(target: redirect_uris.RedirectURI) -> str:
    """The CSP source for the target's origin. CSP has no syntax for IPv6 literals, so a
    [::1] target gets its scheme (the action itself is the validated URI)."""
    if target.host is None or target.host.startswith("["):
        return f"{target.scheme}:"
    return target.origin


async def complete(
    state: ServerState,
    req: AuthorizationRequest,
    session: IdpSession,
    user: User,
    *,
    acr: str | None = None,
    reauth_grant_id: str | None = None,
) -> Response:
    """The user is signed in: issue a code (or nothing, for response_type=none) and go back.
    ``acr``: the requested acr the sign-in satisfied; ``reauth_grant_id``: the app session a
    reauthentication was for (its ``authenticated_at`` moves when the code is exchanged)."""
    if req.response_type == "none":
        return redirect_back(state, req.redirect_uri, req.response_mode, {"state": req.state})
    code = new_secret()
    now = now_s()
    await state.repo.add_code(
        AuthCode(
            code_hash=sha256_hex(code),
            client_id=req.client_id,
            user_id=user.id,
            idp_session_id=session.id,
            redirect_uri=req.redirect_uri,
            scopes=req.scopes,
            nonce=req.nonce,
            code_challenge=req.code_challenge,
            auth_time=session.authenticated_at,
            amr=session.amr,
            created_at=now,
            expires_at=now + state.config.authorization_code_lifetime,
            used_at=None,
            issued_grant_id=None,
            issued_token_hash=None,
            acr=acr,
            reauth_grant_id=reauth_grant_id,
        )
    )
    return redirect_back(
        state, req.redirect_uri, req.response_mode, {"code": code, "state": req.state}
    )


def verified_id_token_hint(state: ServerState, id_token_hint: str | None) -> dict[str, Any] | None:
    """The claims of an ID token we signed (expired ones too, as the spec allows), or None."""
    if not id_token_hint or len(id_token_hint) > 8192:
        return None
    try:
        header = jwt.get_unverified_header(id_token_hint)
        key = state.keys.public_keys.get(str(header.get("kid")))
        if key is None:
            return None
        claims: dict[str, Any] = jwt.decode(
            id_token_hint,
            key,
            algorithms=[ALGORITHM],
            issuer=state.issuer,
            options={"verify_exp": False, "verify_aud": False},
        )
    except (jwt.PyJWTError, ValueError, RecursionError):
        return None
    aud = claims.get("aud")
    if not isinstance(aud, str) or state.config.client(aud) is None:
        return None
    return claims
