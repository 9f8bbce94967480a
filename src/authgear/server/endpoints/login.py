"""The login and sign-up pages (/login, /signup), where the end-user is authenticated during an
authorization request (OpenID Connect Core §3.1.2.3), and the signed-in home page (/)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authgear.server import events
from authgear.server.endpoints.authorize import (
    AuthorizationRequest,
    complete,
    redirect_uri_allowed,
)
from authgear.server.http import OAuthError, client_ip, read_form
from authgear.server.passwords import hash_password, password_problem, verify_password
from authgear.server.security.lockout import LockoutPolicy
from authgear.server.sessions import (
    clear_session_cookie,
    create_idp_session,
    now_s,
    session_from_cookie,
    set_session_cookie,
)
from authgear.server.state import ServerState, get_state
from authgear.server.storage import EmailTaken, User
from authgear.server.tokens import new_id
from authgear.server.ui import csrf_ok, error_page, render

# No whitespace and no control characters (an email is shown in pages, logs and terminals).
_PART = r"[^@\s\x00-\x1f\x7f-\x9f]"
EMAIL_RE = re.compile(rf"^{_PART}{{1,64}}@{_PART}+\.{_PART}+$|^{_PART}{{1,64}}@localhost$")
WRONG_CREDENTIALS = "Incorrect email or password."
EXPIRED_FLOW = "This sign-in page has expired. Go back to the app and start again."


def safe_next(value: str | None) -> str | None:
    """Where to go after signing in without an OAuth flow (``/login?next=/portal``): a path
    on this server only, never another origin (``//host``, ``/\\host``, ``https:``)."""
    if not value or len(value) > 1000 or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def normalize_email(value: str) -> str | None:
    email = value.strip()
    if len(email) > 320 or not EMAIL_RE.match(email):
        return None
    return email


async def _flow(
    state: ServerState, request: Request
) -> tuple[str | None, AuthorizationRequest | None]:
    flow_id = request.query_params.get("flow")
    if not flow_id:
        return None, None
    if len(flow_id) > 100:
        return flow_id, None
    data = await state.repo.get_flow(flow_id, now_s())
    if data is None:
        return flow_id, None
    try:
        flow = AuthorizationRequest.from_json(data)
    except TypeError:
        return flow_id, None
    # The client's registration may have changed since the flow began: the code goes only to
    # a redirect URI that is still registered (and passes today's rules).
    client = state.config.client(flow.client_id)
    if client is None or not redirect_uri_allowed(client, flow.redirect_uri):
        return flow_id, None
    return flow_id, flow


@dataclass(frozen=True, slots=True)
class _Post:
    state: ServerState
    flow_id: str | None
    flow: AuthorizationRequest | None
    form: dict[str, str] = field(repr=False)


def _page(
    state: ServerState,
    request: Request,
    page: str,
    flow_id: str | None,
    *,
    email: str = "",
    error: str | None = None,
    status: int = 200,
) -> Response:
    next_url = None if flow_id else safe_next(request.query_params.get("next"))
    params = {"flow": flow_id} if flow_id else {"next": next_url} if next_url else {}
    query = f"?{urlencode(params)}" if params else ""
    return render(
        state,
        request,
        f"{page}.html",
        {
            "action": f"/{page}{query}",
            "other": f"/{'login' if page == 'signup' else 'signup'}{query}",
            "email": email,
            "error": error,
        },
        status,
    )


async def _finish(
    state: ServerState,
    request: Request,
    flow_id: str | None,
    flow: AuthorizationRequest | None,
    user: User,
) -> Response:
    session, cookie = await create_idp_session(state, request, user, ["pwd"])
    await state.repo.set_last_login(user.id, now_s())
    if flow is not None and flow_id is not None:
        await state.repo.delete_flow(flow_id)
        response = await complete(state, flow, session, user)
    else:
        target = safe_next(request.query_params.get("next")) or "/"
        response = RedirectResponse(target, status_code=303)
    set_session_cookie(state, response, cookie)
    return response


async def _open(request: Request, page: str) -> _Post | Response:
    """The shared start of /login and /signup: the flow, the page for a GET, and for a POST the
    form once it is readable and its CSRF token matches."""
    state = get_state(request)
    flow_id, flow = await _flow(state, request)
    if flow_id and flow is None:
        return error_page(state, request, EXPIRED_FLOW, 400)
    if request.method == "GET":
        hint = flow.login_hint if flow and flow.login_hint else ""
        return _page(state, request, page, flow_id, email=hint[:320])
    try:
        form = await read_form(request)
    except OAuthError:
        return _page(state, request, page, flow_id, error="The form could not be read.", status=400)
    if not csrf_ok(state, request, form.get("csrf_token")):
        return _page(
            state,
            request,
            page,
            flow_id,
            error="Your session expired. Please try again.",
            status=403,
        )
    return _Post(state, flow_id, flow, form)


async def login_page(request: Request) -> Response:
    """Sign in. Both limits are counted *before* argon2 runs (a reservation, given back when the
    password is right), so concurrent guesses cannot all be checked (security/lockout.py)."""
    post = await _open(request, "login")
    if isinstance(post, Response):
        return post
    state, flow_id, flow, form = post.state, post.flow_id, post.flow, post.form
    email_raw = form.get("email", "")
    password = form.get("password", "")
    ip = client_ip(request, state.config.trusted_proxies)
    limits = state.config.rate_limits
    if not await state.limiter.hit("password", ip, limits.password_failures_per_ip_per_minute, 60):
        return _too_many(state, request, flow_id, email_raw, "Wait a minute and try again.")
    email = normalize_email(email_raw)
    lock_key = f"email:{(email or email_raw).strip().lower()[:320]}"
    lockout = state.config.lockout
    if lockout.enabled and not await state.repo.reserve_login_attempt(
        lock_key, now_s(), _policy(state)
    ):
        # Locked: no password was checked, so this is no failure of this address.
        await state.limiter.refund("password", ip, 60)
        events.locked_out(request)
        return _too_many(state, request, flow_id, email_raw, "Wait a while and try again.")
    user = await state.repo.get_user_by_email(email) if email else None
    ok = await verify_password(user.password_hash if user else None, password[:1024])
    if not ok or user is None or user.disabled:
        # The reserved attempt stays counted, in both limits.
        events.sign_in_failed(request, user.id if user else None)
        return _page(
            state,
            request,
            "login",
            flow_id,
            email=email_raw[:320],
            error=WRONG_CREDENTIALS,
            status=401,
        )
    await state.limiter.refund("password", ip, 60)
    if lockout.enabled:
        await state.repo.clear_login_failures(lock_key)
    events.sign_in(request, user.id)
    return await _finish(state, request, flow_id, flow, user)


def _too_many(
    state: ServerState, request: Request, flow_id: str | None, email_raw: str, wait: str
) -> Response:
    return _page(
        state,
        request,
        "login",
        flow_id,
        email=email_raw[:320],
        error=f"Too many attempts. {wait}",
        status=429,
    )


def _policy(state: ServerState) -> LockoutPolicy:
    cfg = state.config.lockout
    return LockoutPolicy(
        max_attempts=cfg.max_attempts,
        history_duration=cfg.history_duration,
        minimum_duration=cfg.minimum_duration,
        maximum_duration=cfg.maximum_duration,
    )


async def signup_page(request: Request) -> Response:
    post = await _open(request, "signup")
    if isinstance(post, Response):
        return post
    state, flow_id, flow, form = post.state, post.flow_id, post.flow, post.form
    email_raw = form.get("email", "")
    password = form.get("password", "")
    email = normalize_email(email_raw)
    if email is None:
        return _page(
            state,
            request,
            "signup",
            flow_id,
            email=email_raw[:320],
            error="Enter a valid email address.",
            status=400,
        )
    problem = password_problem(password)
    if problem:
        return _page(state, request, "signup", flow_id, email=email, error=problem, status=400)
    ip = client_ip(request, state.config.trusted_proxies)
    if not await state.limiter.hit(
        "signup", ip, state.config.rate_limits.signup_per_ip_per_hour, 3600
    ):
        return _page(
            state,
            request,
            "signup",
            flow_id,
            email=email,
            error="Too many sign-ups from your network. Try again later.",
            status=429,
        )
    password_hash = await hash_password(password)
    try:
        user = await state.repo.create_user(
            user_id=new_id(), email=email, password_hash=password_hash, now=now_s()
        )
    except EmailTaken:
        # Generic on purpose: the page must not confirm which emails have accounts.
        return _page(
            state,
            request,
            "signup",
            flow_id,
            email=email,
            status=400,
            error="We could not create an account with these details. "
            "If you already have an account, sign in instead.",
        )
    return await _finish(state, request, flow_id, flow, user)


async def home_page(request: Request) -> Response:
    state = get_state(request)
    found = await session_from_cookie(state, request)
    user = found[1] if found else None
    return render(state, request, "home.html", {"user": user})


async def logout_page(request: Request) -> Response:
    """The home page's sign-out button (the OIDC way is /oauth2/end_session)."""
    state = get_state(request)
    try:
        form = await read_form(request)
    except OAuthError:
        form = {}
    if not csrf_ok(state, request, form.get("csrf_token")):
        return error_page(state, request, "Your session expired. Please try again.", 403)
    found = await session_from_cookie(state, request)
    if found:
        await state.repo.end_session(found[0].id)
    response = RedirectResponse("/", status_code=303)
    clear_session_cookie(state, response)
    return response
