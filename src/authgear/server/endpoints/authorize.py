"""GET/POST /oauth2/authorize (RFC 6749 §3.1, §4.1; OpenID Connect Core §3.1.2): validate the
request, then skip the form with a live browser session or send the user to the login / sign-up
page."""

from __future__ import annotations

import html
import secrets
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from authgear.server.config import ClientConfig
from authgear.server.http import OAuthError, client_ip, query_params, read_form
from authgear.server.oauth import pkce
from authgear.server.ratelimit import ip_bucket
from authgear.server.security import redirect_uris
from authgear.server.sessions import now_s, session_from_cookie
from authgear.server.state import ServerState, get_state
from authgear.server.storage import AuthCode, IdpSession, User
from authgear.server.tokens import new_secret, sha256_hex
from authgear.server.ui import error_page

SUPPORTED_SCOPES = frozenset(
    {
        "openid",
        "offline_access",
        "profile",
        "email",
        "phone",
        "address",
        "https://authgear.com/scopes/full-access",
        "https://authgear.com/scopes/full-userinfo",
    }
)
FLOW_LIFETIME = 3600
# What a login flow may store of a request, per value (characters). An anonymous visitor makes
# the server keep these for an hour, so each is capped at what the protocol needs; a longer
# value is refused (an error redirect), never cut short (a cut state would not match).
MAX_STATE = 1024
MAX_NONCE = 512
MAX_LOGIN_HINT = 320  # an email address
MAX_UI_LOCALES = 64  # a few BCP 47 tags


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuthorizationRequest:
        return cls(**data)


class RedirectError(Exception):
    """An error reported to the client by redirecting to its (validated) redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(error)
        self.error = error
        self.description = description


def parse_request(
    state: ServerState, params: dict[str, str]
) -> tuple[ClientConfig, str, str, str | None]:
    """The client and redirect target; errors here must not redirect (unknown client or URI)."""
    client_id = params.get("client_id", "")
    client = state.config.client(client_id) if client_id else None
    if client is None:
        raise OAuthError("invalid_client", "invalid client ID")
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri or not redirect_uri_allowed(client, redirect_uri):
        raise OAuthError("invalid_request", "invalid redirect URI")
    mode = params.get("response_mode") or ""
    if mode not in ("", "query", "fragment", "form_post"):
        mode = ""
    return client, redirect_uri, mode, params.get("state")


def validate(
    client: ClientConfig, redirect_uri: str, mode: str, params: dict[str, str]
) -> AuthorizationRequest:
    response_type = params.get("response_type", "")
    if response_type not in ("code", "none"):
        raise RedirectError("unsupported_response_type", "only response_type=code is supported")
    if response_type == "code" and not client.allows("authorization_code"):
        raise RedirectError("unauthorized_client", "this client cannot use the code flow")
    # Repeats are dropped (order kept): a repeated scope means nothing and would be stored.
    scopes = list(dict.fromkeys(params.get("scope", "").split()))
    if "openid" not in scopes:
        raise RedirectError("invalid_scope", "scope must contain openid")
    unknown = [s for s in scopes if s not in SUPPORTED_SCOPES]
    if unknown:
        raise RedirectError("invalid_scope", f"unsupported scope: {unknown[0][:60]}")
    if "offline_access" in scopes and not client.allows("refresh_token"):
        # OIDC Core §11 lets the server ignore offline_access; the client gets no refresh token.
        scopes = [s for s in scopes if s != "offline_access"]
    challenge = params.get("code_challenge") or None
    method = params.get("code_challenge_method") or None
    required = client.pkce_required and response_type == "code"
    problem = pkce.challenge_error(challenge, method, required=required)
    if problem is not None:
        raise RedirectError("invalid_request", problem)
    prompt = list(dict.fromkeys(params.get("prompt", "").split()))
    if any(p not in ("none", "login", "consent", "select_account") for p in prompt):
        raise RedirectError("invalid_request", "unsupported prompt value")
    if "none" in prompt and len(prompt) > 1:
        raise RedirectError("invalid_request", "prompt=none cannot be combined")
    max_age: int | None = None
    if params.get("max_age"):
        raw = params["max_age"]
        if not raw.isdigit() or len(raw) > 10:
            raise RedirectError("invalid_request", "max_age must be a non-negative integer")
        max_age = int(raw)
    _check_lengths(params)
    page = params.get("x_page") or "login"
    if page not in ("login", "signup"):
        page = "login"
    return AuthorizationRequest(
        client_id=client.id,
        redirect_uri=redirect_uri,
        response_type=response_type,
        response_mode=mode or "query",
        scopes=scopes,
        state=params.get("state"),
        nonce=params.get("nonce") or None,
        code_challenge=challenge,
        prompt=prompt,
        max_age=max_age,
        login_hint=params.get("login_hint") or None,
        ui_locales=params.get("ui_locales") or None,
        page=page,
    )


def _check_lengths(params: dict[str, str]) -> None:
    for name, limit in (
        ("state", MAX_STATE),
        ("nonce", MAX_NONCE),
        ("login_hint", MAX_LOGIN_HINT),
        ("ui_locales", MAX_UI_LOCALES),
    ):
        if len(params.get(name, "")) > limit:
            raise RedirectError("invalid_request", f"{name} is longer than {limit} characters")


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
    state: ServerState, req: AuthorizationRequest, session: IdpSession, user: User
) -> Response:
    """The user is signed in: issue a code (or nothing, for response_type=none) and go back."""
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
        )
    )
    return redirect_back(
        state, req.redirect_uri, req.response_mode, {"code": code, "state": req.state}
    )


async def authorize_endpoint(request: Request) -> Response:
    state = get_state(request)
    visitor = ip_bucket(client_ip(request, state.config.trusted_proxies))
    if not await state.limiter.hit(
        "authorize", visitor, state.config.rate_limits.authorize_per_ip_per_minute, 60
    ):
        return error_page(state, request, "Too many requests. Wait a minute and try again.", 429)
    try:
        params = await read_form(request) if request.method == "POST" else query_params(request)
        client, redirect_uri, mode, client_state = parse_request(state, params)
    except OAuthError as e:
        message = {
            "invalid_client": "The app that sent you here is not registered with this server.",
        }.get(e.error, "The sign-in request is not valid: " + (e.description or e.error) + ".")
        return error_page(state, request, message, 400)
    try:
        req = validate(client, redirect_uri, mode, params)
    except RedirectError as e:
        return redirect_back(
            state,
            redirect_uri,
            mode or "query",
            {"error": e.error, "error_description": e.description, "state": client_state},
        )

    found = await session_from_cookie(state, request)
    if found is not None and "login" not in req.prompt:
        session, user = found
        # max_age=0 asks for a fresh login, like prompt=login.
        if req.max_age is None or (
            req.max_age > 0 and now_s() - session.authenticated_at <= req.max_age
        ):
            return await complete(state, req, session, user)
    if "none" in req.prompt:
        return redirect_back(
            state,
            req.redirect_uri,
            req.response_mode,
            {
                "error": "login_required",
                "error_description": "login is required",
                "state": req.state,
            },
        )
    flow_id = new_secret()
    now = now_s()
    limits = state.config.rate_limits
    if not await state.repo.add_flow(
        flow_id,
        req.to_json(),
        now,
        now + FLOW_LIFETIME,
        ip_key=visitor,
        max_live=limits.login_flows_per_ip if limits.enabled else None,
    ):
        # RFC 6749 §4.1.2.1: the app learns it, the server stores nothing more.
        return redirect_back(
            state,
            req.redirect_uri,
            req.response_mode,
            {
                "error": "temporarily_unavailable",
                "error_description": "too many sign-ins in progress from this network",
                "state": req.state,
            },
        )
    path = "/signup" if req.page == "signup" else "/login"
    return RedirectResponse(
        f"{path}?{urlencode({'flow': flow_id})}",
        status_code=303,
        headers={"Cache-Control": "no-store"},
    )
