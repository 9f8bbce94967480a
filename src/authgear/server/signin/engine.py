"""The sign-in pages: the entry pages (/login, /signup), every step's page (/flow/<step>) and
ceremony options (POST /flow/<step>/options). The engine loads the flow (checking that it is
this browser's), asks the policy which steps are allowed, runs the step, records what it did,
saves the flow (compare-and-set) and moves on: to the next step's page, or to finishing.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from authgear.server.account_rules import safe_next
from authgear.server.http import OAuthError, client_ip, read_form
from authgear.server.ratelimit import ip_bucket
from authgear.server.security.otp import device_token_hash
from authgear.server.security.passkeys import relying_party
from authgear.server.sessions import now_s, session_from_cookie
from authgear.server.signin import finish as finishing
from authgear.server.signin.flow import (
    FLOW_LIFETIME,
    LOGIN,
    SETTINGS,
    SIGNUP,
    LoginFlow,
    StepDone,
    binding_hash,
    bound_to_this_browser,
    browser_binding,
    new_flow,
    set_binding_cookie,
    starter_valid,
)
from authgear.server.signin.policy import Facts, Next, next_step
from authgear.server.signin.steps import STEPS
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.signin.steps.sso import buttons as sso_buttons
from authgear.server.state import ServerState, get_state
from authgear.server.storage import Authenticator, User
from authgear.server.storage.authenticators import PASSKEY, RECOVERY_CODE, TOTP
from authgear.server.ui import csrf_ok, csrf_token_for_flow, error_page, render, set_csrf_cookie

EXPIRED_FLOW = "This sign-in page has expired. Go back to the app and start again."
CONFLICT = "This sign-in moved on in another tab or window. Continue there, or start again."
FORM_UNREADABLE = "The form could not be read."
CSRF_FAILED = "Your session expired. Please try again."
DEVICE_COOKIE = "mfa_device_token"
ENTRY_STEPS = (LOGIN, SIGNUP)
# Automatic steps in a row at most (each is one policy decision).
MAX_AUTO = 4


# -- URLs ----------------------------------------------------------------------------------------


def step_url(name: str, flow: LoginFlow) -> str:
    path = f"/{name}" if name in ENTRY_STEPS else f"/flow/{name}"
    if flow.saved:
        return f"{path}?{urlencode({'flow': flow.id})}"
    # Not stored yet: an entry page, or a step whose POST starts the flow (Step.starts_flow).
    target = flow.starter.get("next")
    return path + (f"?{urlencode({'next': target})}" if target else "")


def _redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


# -- loading and saving ----------------------------------------------------------------------------


async def load_flow(
    state: ServerState, request: Request, flow_id: str | None = None
) -> LoginFlow | Response | None:
    """The flow named by ``?flow=`` (or ``flow_id``) if it is live, readable and this
    browser's; None if the URL names none; an error page otherwise."""
    flow_id = flow_id if flow_id is not None else request.query_params.get("flow")
    if flow_id is None:
        return None
    row = await state.repo.get_flow_row(flow_id, now_s()) if 0 < len(flow_id) <= 100 else None
    if row is None or not bound_to_this_browser(state, request, row.binding):
        return error_page(state, request, EXPIRED_FLOW, 400)
    try:
        flow = LoginFlow.from_json(flow_id, row.rev, row.data)
    except (TypeError, KeyError, ValueError):
        return error_page(state, request, EXPIRED_FLOW, 400)
    if not starter_valid(state, flow):
        return error_page(state, request, EXPIRED_FLOW, 400)
    return flow


async def save_flow(
    state: ServerState, request: Request, flow: LoginFlow, capped: Response | None = None
) -> Response | None:
    """Store the flow (a new one bound to this browser, within the per-IP cap of live flows);
    an error page when another request changed it first, or when over the cap (``capped``)."""
    if flow.saved:
        if not await state.repo.update_flow(flow.id, flow.rev, flow.to_json()):
            return error_page(state, request, CONFLICT, 409)
        flow.rev += 1
        return None
    limits = state.config.rate_limits
    binding = binding_hash(browser_binding(state, request))
    if not await state.repo.add_flow(
        flow.id,
        flow.to_json(),
        flow.created_at,
        flow.created_at + FLOW_LIFETIME,
        ip_key=ip_bucket(client_ip(request, state.config.trusted_proxies)),
        max_live=limits.login_flows_per_ip if limits.enabled else None,
        binding=binding,
    ):
        return capped or error_page(
            state, request, "Too many sign-ins in progress from your network. Try later.", 429
        )
    flow.rev = 0
    return None


async def start_flow(
    state: ServerState, request: Request, flow: LoginFlow, *, capped: Response | None = None
) -> Response:
    """Store a new flow and send the browser to its first page (for /oauth2/authorize and the
    settings pages). Its response sets the browser-binding cookie. ``capped``: the answer when
    this network has too many sign-ins in progress."""
    ctx = await context(state, request, flow)
    auto = await _run_auto(ctx)
    if isinstance(auto, Response):
        return auto
    if auto.step is None:
        return await finishing.finish(ctx)
    failed = await save_flow(state, request, flow, capped)
    if failed is not None:
        return failed
    response = _redirect(step_url(auto.step, flow))
    set_binding_cookie(state, request, response)
    return response


# -- what the policy needs ----------------------------------------------------------------------


async def context(state: ServerState, request: Request, flow: LoginFlow) -> StepContext:
    user = await state.repo.get_user(flow.user_id) if flow.user_id else None
    authenticators = await state.authenticators.list_for_user(user.id) if user else []
    facts = await _facts(state, request, flow, user, authenticators)
    return StepContext(state, request, flow, facts, user, authenticators)


async def _facts(
    state: ServerState,
    request: Request,
    flow: LoginFlow,
    user: User | None,
    authenticators: list[Authenticator],
) -> Facts:
    cfg = state.config.authentication
    kinds = {a.kind for a in authenticators if a.kind != RECOVERY_CODE}
    unused_codes = any(a.kind == RECOVERY_CODE and a.last_used_at is None for a in authenticators)
    trusted = False
    raw = request.cookies.get(DEVICE_COOKIE)
    token_hash = device_token_hash(raw) if raw else None
    if user is not None and token_hash is not None and TOTP in kinds:
        trusted = await state.authenticators.device_token_valid(token_hash, user.id, now_s())
    return Facts(
        mode=cfg.secondary_authentication_mode,
        passwords=cfg.passwords,
        passkeys=cfg.passkeys and relying_party(state.issuer, state.config.app_name) is not None,
        totp=cfg.totp,
        recovery_codes_enabled=not cfg.recovery_code.disabled,
        device_tokens_enabled=not cfg.device_token.disabled,
        has_password=user is not None and user.password_hash is not None and cfg.passwords,
        has_totp=TOTP in kinds,
        has_recovery_codes=unused_codes,
        has_passkeys=PASSKEY in kinds,
        device_trusted=trusted,
        must_verify_email=(
            user is not None and not user.email_verified and state.config.verification == "required"
        ),
        sso=bool(state.config.identity_providers),
        identity_providers=await _linked_providers(state, user),
    )


async def _linked_providers(state: ServerState, user: User | None) -> tuple[str, ...]:
    """The user's linked identities of configured providers (aliases)."""
    configured = {p.alias for p in state.config.identity_providers}
    if user is None or not configured:
        return ()
    linked = await state.identities.list_for_user(user.id)
    return tuple(sorted({i.provider for i in linked if i.provider in configured}))


# -- pages -------------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    """GET/POST /login: email and password (and a passkey button)."""
    return await _entry(request, LOGIN)


async def signup_page(request: Request) -> Response:
    """GET/POST /signup: create an account."""
    return await _entry(request, SIGNUP)


async def _entry(request: Request, name: str) -> Response:
    state = get_state(request)
    loaded = await load_flow(state, request)
    if isinstance(loaded, Response):
        return loaded
    if loaded is None:
        # No flow yet: one is stored only when the sign-in needs a second page.
        starter = {"kind": "next", "next": safe_next(request.query_params.get("next"))}
        loaded = new_flow(name, starter, now_s())
    return await _step(state, request, loaded, name)


async def step_page(request: Request) -> Response:
    """GET/POST /flow/<step>?flow=<id>."""
    state = get_state(request)
    name = str(request.path_params.get("step", ""))
    if name not in STEPS or name in ENTRY_STEPS or STEPS[name].auto:
        return error_page(state, request, "There is no such page.", 404)
    loaded = await load_flow(state, request)
    if isinstance(loaded, Response):
        return loaded
    if loaded is None:
        if not (STEPS[name].starts_flow and request.method == "POST"):
            return error_page(state, request, EXPIRED_FLOW, 400)
        # A button of an entry page without a stored flow (/login?next=...): start one.
        starter = {"kind": "next", "next": safe_next(request.query_params.get("next"))}
        loaded = new_flow(LOGIN, starter, now_s())
    return await _step(state, request, loaded, name)


async def settings_owner_ok(state: ServerState, request: Request, flow: LoginFlow) -> bool:
    """A settings change is for the account signed in here, still: not for whoever signs in to
    this browser after the one who started it signed out."""
    if flow.intent != SETTINGS:
        return True
    found = await session_from_cookie(state, request)
    return found is not None and found[1].id == flow.user_id


async def _step(state: ServerState, request: Request, flow: LoginFlow, name: str) -> Response:
    if not await settings_owner_ok(state, request, flow):
        return error_page(state, request, EXPIRED_FLOW, 400)
    ctx = await context(state, request, flow)
    allowed = next_step(flow, ctx.facts)
    if allowed.step is None:
        return await finishing.finish(ctx)
    if name not in allowed.allowed:
        return _redirect(step_url(allowed.step, flow))
    if name in ENTRY_STEPS and flow.user_id is None and flow.intent in ENTRY_STEPS:
        flow.intent = name
    step = STEPS[name]
    ctx.action = step_url(name, flow)
    if request.method == "GET":
        return await show(ctx, step, allowed)
    try:
        form = await read_form(request)
    except OAuthError:
        return await show(ctx, step, allowed, Again(FORM_UNREADABLE, 400))
    if not csrf_ok(state, request, form.get("csrf_token")):
        return await show(ctx, step, allowed, Again(CSRF_FAILED, 403))
    result = await step.submit(ctx, form)
    return await after(ctx, step, allowed, result)


async def options_endpoint(request: Request) -> Response:
    """POST /flow/<step>/options[?flow=<id>]: a ceremony's options (JSON) for the step's script.
    From an entry page without a flow (``/login?next=``), this starts one."""
    state = get_state(request)
    name = str(request.path_params.get("step", ""))
    step = STEPS.get(name)
    if step is None or not step.ceremony:
        return JSONResponse({"error": "not_found"}, status_code=404)
    loaded = await load_flow(state, request)
    if isinstance(loaded, Response):
        return JSONResponse({"error": "expired", "message": EXPIRED_FLOW}, status_code=400)
    try:
        form = await read_form(request)
    except OAuthError:
        return JSONResponse({"error": "invalid_request"}, status_code=400)
    if not csrf_ok(state, request, form.get("csrf_token")):
        return JSONResponse({"error": "csrf", "message": CSRF_FAILED}, status_code=403)
    if loaded is None:
        starter = {"kind": "next", "next": safe_next(form.get("next"))}
        loaded = new_flow(LOGIN, starter, now_s())
    ctx = await context(state, request, loaded)
    allowed = next_step(loaded, ctx.facts)
    if name not in allowed.allowed:
        return JSONResponse({"error": "not_allowed", "message": EXPIRED_FLOW}, status_code=409)
    options = await step.options(ctx)
    if options is None:
        return JSONResponse({"error": "unavailable"}, status_code=404)
    failed = await save_flow(state, request, loaded)
    if failed is not None:
        return JSONResponse({"error": "conflict", "message": CONFLICT}, status_code=409)
    body = {
        "flow": loaded.id,
        "action": step_url(name, loaded),
        "csrf_token": csrf_token_for_flow(state, request, loaded.id),
        "publicKey": options,
    }
    response = JSONResponse(body, headers={"Cache-Control": "no-store"})
    set_binding_cookie(state, request, response)
    set_csrf_cookie(state, request, response)
    return response


# -- showing and moving on -------------------------------------------------------------------


async def show(ctx: StepContext, step: Step, allowed: Next, again: Again | None = None) -> Response:
    # A message left for this page (an upstream provider's refused answer, sso_callback.py).
    flash = ctx.flow.scratch.pop("flash", None)
    if flash is not None:
        ctx.changed = True
    values = await step.show(ctx)
    if ctx.changed:
        # The step keeps state between showing and submitting (a new TOTP secret).
        ctx.changed = False
        failed = await save_flow(ctx.state, ctx.request, ctx.flow)
        if failed is not None:
            return failed
    flow = ctx.flow
    alternatives = {n: step_url(n, flow) for n in allowed.allowed if n != step.name}
    page = {
        "action": ctx.action,
        "flow_id": flow.id if flow.saved else None,
        "next_path": flow.starter.get("next") if not flow.saved else None,
        "step": step.name,
        "alternatives": alternatives,
        "user_email": ctx.user.email if ctx.user else None,
        "passkeys": ctx.facts.passkeys,
        "passkey_options": _options_url(step, flow),
        # "Continue with ..." buttons (they post to alternatives.sso) and a note kept in the
        # flow for the next page (login_and_link: which account to sign in to).
        "sso_providers": sso_buttons(ctx) if "sso" in alternatives else [],
        "notice": flow.scratch.get("notice"),
        "error": again.error if again else flash,
        **values,
        **(again.values if again else {}),
    }
    status = again.status if again else 200
    return render(ctx.state, ctx.request, step.template, page, status)


def _options_url(step: Step, flow: LoginFlow) -> str:
    """Where the page's passkey script gets its options: its own step's, or (on the entry
    page) the passkey step's."""
    name = step.name if step.ceremony else "passkey"
    query = f"?{urlencode({'flow': flow.id})}" if flow.saved else ""
    return f"/flow/{name}/options{query}"


async def after(
    ctx: StepContext, step: Step, allowed: Next, result: Done | Again | Response
) -> Response:
    """A step's outcome: its page again with the error, a response it made, or the step
    recorded and the flow moving on."""
    if isinstance(result, Response):
        return result
    if isinstance(result, Again):
        return await show(ctx, step, allowed, result)
    record(ctx, step.name, result)
    if result.user is not None:
        ctx = await context(ctx.state, ctx.request, ctx.flow)
    return await proceed(ctx)


def record(ctx: StepContext, name: str, done: Done) -> None:
    ctx.flow.steps.append(StepDone(name, list(done.amr), done.authenticator, now_s()))
    if done.user is not None:
        ctx.flow.user_id = done.user.id


async def proceed(ctx: StepContext) -> Response:
    """After a step: run automatic steps, then finish or go to the next page."""
    auto = await _run_auto(ctx)
    if isinstance(auto, Response):
        return auto
    if auto.step is None:
        return await finishing.finish(ctx)
    failed = await save_flow(ctx.state, ctx.request, ctx.flow)
    response = failed or _redirect(step_url(auto.step, ctx.flow))
    set_binding_cookie(ctx.state, ctx.request, response)
    return response


async def _run_auto(ctx: StepContext) -> Next | Response:
    for _ in range(MAX_AUTO):
        allowed = next_step(ctx.flow, ctx.facts)
        if allowed.step is None or not STEPS[allowed.step].auto:
            return allowed
        step = STEPS[allowed.step]
        result = await step.submit(ctx, {})
        if not isinstance(result, Done):
            return error_page(ctx.state, ctx.request, EXPIRED_FLOW, 400)
        record(ctx, step.name, result)
        ctx.facts = await _facts(ctx.state, ctx.request, ctx.flow, ctx.user, ctx.authenticators)
    return error_page(ctx.state, ctx.request, EXPIRED_FLOW, 400)
