"""GET/POST /oauth2/authorize (RFC 6749 §3.1, §4.1; OpenID Connect Core §3.1.2): validate the
request, then skip the form with a live browser session or send the user to the login / sign-up
page."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authgear.server.authorization import (
    MFA_ACR,
    AuthorizationRequest,
    complete,
    redirect_back,
    redirect_uri_allowed,
    verified_id_token_hint,
)
from authgear.server.config import ClientConfig
from authgear.server.http import OAuthError, client_ip, query_params, read_form
from authgear.server.oauth import pkce
from authgear.server.ratelimit import ip_bucket
from authgear.server.security import redirect_uris
from authgear.server.sessions import now_s, session_from_cookie
from authgear.server.signin.amr import multi_factor
from authgear.server.signin.engine import start_flow
from authgear.server.signin.flow import LOGIN, REAUTH, SIGNUP, LoginFlow, new_flow
from authgear.server.state import ServerState, get_state
from authgear.server.storage import IdpSession, User
from authgear.server.ui import error_page

log = logging.getLogger("authgear.server")

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
# What a login flow may store of a request, per value (characters). An anonymous visitor makes
# the server keep these for an hour, so each is capped at what the protocol needs; a longer
# value is refused (an error redirect), never cut short (a cut state would not match).
MAX_STATE = 1024
MAX_NONCE = 512
MAX_LOGIN_HINT = 320  # an email address
MAX_UI_LOCALES = 64  # a few BCP 47 tags
MAX_ACR_VALUES = 512
MAX_ID_TOKEN_HINT = 8192  # not stored; a JWT we signed is far shorter


class Misconfigured(OAuthError):
    """A request the app cannot be told about (unknown client, unregistered redirect URI):
    an error page on our origin, and a log line for whoever configures the app."""

    def __init__(
        self, error: str, description: str, *, client_id: str, redirect_uri: str | None = None
    ) -> None:
        super().__init__(error, description)
        self.client_id = client_id
        self.redirect_uri = redirect_uri


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
        raise Misconfigured("invalid_client", "invalid client ID", client_id=client_id)
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri or not redirect_uri_allowed(client, redirect_uri):
        raise Misconfigured(
            "invalid_request",
            "invalid redirect URI",
            client_id=client.id,
            redirect_uri=redirect_uri,
        )
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
    scopes = _scopes(client, params)
    challenge = params.get("code_challenge") or None
    method = params.get("code_challenge_method") or None
    required = client.pkce_required and response_type == "code"
    problem = pkce.challenge_error(challenge, method, required=required)
    if problem is not None:
        raise RedirectError("invalid_request", problem)
    prompt, max_age = _prompt_and_max_age(params)
    _check_lengths(params)
    acr_values = list(dict.fromkeys(params.get("acr_values", "").split()))[:10]
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
        acr_values=acr_values,
    )


def _scopes(client: ClientConfig, params: dict[str, str]) -> list[str]:
    """The requested scopes: openid and only known ones; offline_access dropped for a client
    without refresh tokens."""
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
    return scopes


def _prompt_and_max_age(params: dict[str, str]) -> tuple[list[str], int | None]:
    """``prompt`` (OpenID Connect Core §3.1.2.1) and ``max_age``, checked together: prompt=none
    cannot ask the user, so it combines with neither another prompt nor max_age."""
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
    if "none" in prompt and "max_age" in params:
        # Authgear: no session can be proven fresh without asking the user.
        raise RedirectError("invalid_request", "prompt=none cannot be combined with max_age")
    return prompt, max_age


def _check_lengths(params: dict[str, str]) -> None:
    for name, limit in (
        ("state", MAX_STATE),
        ("nonce", MAX_NONCE),
        ("login_hint", MAX_LOGIN_HINT),
        ("ui_locales", MAX_UI_LOCALES),
        ("acr_values", MAX_ACR_VALUES),
        ("id_token_hint", MAX_ID_TOKEN_HINT),
    ):
        if len(params.get(name, "")) > limit:
            raise RedirectError("invalid_request", f"{name} is longer than {limit} characters")


def _shown(value: str, limit: int = 300) -> str:
    """User-supplied text fit for a log line or a page: control characters escaped, cut."""
    cut = value[:limit] + ("..." if len(value) > limit else "")
    return (
        cut if cut.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    )


def _misconfigured_page(state: ServerState, request: Request, e: Misconfigured) -> Response:
    """The page says what is wrong and how to fix it (the app's developer is usually the one
    who sees it first); the log line says the same for the operator."""
    client_id = _shown(e.client_id, 200)
    if e.redirect_uri is None:
        log.warning("authorize refused: unknown client_id %r", client_id)
        message = (
            f"The app that sent you here (client id “{client_id}”) is not registered with this "
            "server. Its developer adds the client to clients: in the server's authgear.yaml."
        )
        return error_page(state, request, message, 400)
    uri = _shown(e.redirect_uri)
    reason = redirect_uris.refusal_reason(e.redirect_uri) if e.redirect_uri else "it is empty"
    log.warning("authorize refused: redirect_uri %r for client %r: %s", uri, client_id, reason)
    message = (
        f"The app (client id “{client_id}”) asked to return to the redirect URI “{uri}”, "
        f"which this server refuses: {reason}. Its developer adds the exact URI to "
        "redirect_uris of this client in the server's authgear.yaml (see docs/client.md)."
    )
    return error_page(state, request, message, 400)


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
    except Misconfigured as e:
        return _misconfigured_page(state, request, e)
    except OAuthError as e:
        message = "The sign-in request is not valid: " + (e.description or e.error) + "."
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

    hint_token = params.get("id_token_hint")
    hint = verified_id_token_hint(state, hint_token) if hint_token else None
    if hint_token and (hint is None or hint.get("aud") != req.client_id):
        # OIDC Core §3.1.2.2: a hint we did not issue to this client is an error, never a
        # reason to sign in someone else.
        return redirect_back(
            state,
            req.redirect_uri,
            req.response_mode,
            {
                "error": "invalid_request",
                "error_description": "invalid id_token_hint",
                "state": req.state,
            },
        )
    return await _decide(state, request, req, hint, visitor)


def _error(req: AuthorizationRequest, state: ServerState, error: str, text: str) -> Response:
    return redirect_back(
        state,
        req.redirect_uri,
        req.response_mode,
        {"error": error, "error_description": text, "state": req.state},
    )


async def _hinted_session_time(
    state: ServerState, hint: dict[str, Any], now: int
) -> tuple[int | None, str | None, str | None]:
    """When the session an id_token_hint names (its ``sid``) last authenticated, and whether
    it is a browser session or an app session (offline grant): (authenticated_at, idp session
    id, grant id). Only a live session of the hint's user counts."""
    sid, sub = hint.get("sid"), hint.get("sub")
    if not isinstance(sid, str) or not isinstance(sub, str) or len(sid) > 100:
        return None, None, None
    session = await state.repo.get_idp_session(sid)
    if session is not None and session.user_id == sub and session.expires_at > now:
        return session.authenticated_at, session.id, None
    grant = await state.repo.get_grant(sid)
    if grant is not None and grant.user_id == sub and grant.expires_at > now:
        return grant.authenticated_at, None, grant.id
    return None, None, None


async def _decide(
    state: ServerState,
    request: Request,
    req: AuthorizationRequest,
    hint: dict[str, Any] | None,
    visitor: str | None,
) -> Response:
    """Use the browser session, or start a sign-in flow (login, or a reauthentication of the
    hinted user), per prompt, max_age, acr_values and id_token_hint (accounts spec §1.7).

    ``max_age`` is measured against the hinted session when there is a hint (Authgear), else
    against the browser's session (OIDC Core §3.1.2.1). A hint for another user than the
    browser's never uses the browser's session: that user signs in, nobody else."""
    now = now_s()
    found = await session_from_cookie(state, request)
    hint_sub = str(hint["sub"]) if hint is not None and isinstance(hint.get("sub"), str) else None
    hinted_at, hinted_idp, hinted_grant = (
        await _hinted_session_time(state, hint, now) if hint is not None else (None, None, None)
    )
    if hint is not None:
        reference = hinted_at
    else:
        reference = found[0].authenticated_at if found is not None else None
    stale = req.max_age is not None and (
        req.max_age == 0 or reference is None or not 0 <= now - reference <= req.max_age
    )
    login = "login" in req.prompt or stale
    usable = found is not None and (hint_sub is None or found[1].id == hint_sub)
    mfa_asked = MFA_ACR in req.acr_values
    if found is not None and usable and not login:
        session, user = found
        if not mfa_asked or multi_factor(session.amr):
            return await complete(state, req, session, user, acr=MFA_ACR if mfa_asked else None)
        if "none" in req.prompt:
            # acr is a voluntary claim (OIDC Core §5.5.1.1): the app sees it is missing.
            return await complete(state, req, session, user)
        # A step-up: this user confirms it is them, with a second factor.
        flow = new_flow(REAUTH, _starter(req), now, user_id=user.id, reauth_session=session.id)
        flow.require_mfa = True
        return await _start(state, request, req, flow, visitor)
    if "none" in req.prompt:
        return _error(req, state, "login_required", "login is required")
    hinted_sid = hinted_idp or hinted_grant
    flow = _login_flow(req, now, hint, hint_sub, hinted_sid, found)
    # The app session the hint names gets the new authenticated_at at the code exchange.
    flow.reauth_grant = hinted_sid if flow.intent == REAUTH else None
    flow.require_mfa = mfa_asked
    return await _start(state, request, req, flow, visitor)


def _starter(req: AuthorizationRequest) -> dict[str, Any]:
    return {"kind": "authorize", "request": req.to_json()}


def _login_flow(
    req: AuthorizationRequest,
    now: int,
    hint: dict[str, Any] | None,
    hint_sub: str | None,
    hinted_sid: str | None,
    found: tuple[IdpSession, User] | None,
) -> LoginFlow:
    """A reauthentication when the hint is unexpired and names a live session of its user
    (Authgear's rule): no identify step; the browser's session is refreshed if it is that
    user's. Otherwise a login (of the hinted user only, when there is a hint)."""
    intent = SIGNUP if req.page == SIGNUP else LOGIN
    if hint is None or hint_sub is None:
        return new_flow(intent, _starter(req), now)
    exp = hint.get("exp")
    unexpired = isinstance(exp, int) and exp > now
    if unexpired and hinted_sid is not None:
        same = found is not None and found[1].id == hint_sub
        return new_flow(
            REAUTH,
            _starter(req),
            now,
            user_id=hint_sub,
            reauth_session=found[0].id if same and found is not None else None,
        )
    return new_flow(LOGIN, _starter(req), now, expected_user=hint_sub)


async def _start(
    state: ServerState,
    request: Request,
    req: AuthorizationRequest,
    flow: LoginFlow,
    visitor: str | None,
) -> Response:
    if flow.user_id is not None:
        user = await state.repo.get_user(flow.user_id)
        if user is None or user.disabled:
            return _error(req, state, "login_required", "the hinted user cannot sign in")
    # RFC 6749 §4.1.2.1: over the cap of live flows, the app learns it and nothing is stored.
    capped = _error(
        req, state, "temporarily_unavailable", "too many sign-ins in progress from this network"
    )
    return await start_flow(state, request, flow, capped=capped)
