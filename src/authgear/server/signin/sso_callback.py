"""GET /sso/oauth2/callback/<alias>: an upstream provider's authorization response (RFC 6749
§4.1.2) for a sign-in flow's ``sso`` or ``link_sso`` step.

``state`` names the flow and carries the pending request's secret; the flow must be this
browser's (its binding cookie, sent on this top-level navigation: SameSite=Lax). The pending
request is removed from the stored flow (compare-and-set) before the code is redeemed, so a
replayed or concurrent second answer finds none. A refusal goes back to the flow's current
page with a clear message (never a page that shows the code); a success moves the flow on.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authgear.server.http import client_ip
from authgear.server.signin import engine
from authgear.server.signin.flow import LoginFlow
from authgear.server.signin.policy import next_step
from authgear.server.signin.steps import STEPS
from authgear.server.signin.steps.base import Again, Done
from authgear.server.signin.steps.sso import PENDING, SsoStep
from authgear.server.sso import rp
from authgear.server.state import get_state
from authgear.server.ui import error_page

STALE = (
    "This sign-in answer is not for a sign-in in progress in this browser (it was already "
    "used, or it expired). Go back to the app and start again."
)
TOO_SLOW = "The sign-in with {label} took too long. Try again."
# flow.scratch key of a message for the flow's next page (engine.show shows it once).
FLASH = "flash"


async def callback(request: Request) -> Response:
    state = get_state(request)
    alias = str(request.path_params.get("alias", ""))
    cfg = state.config.identity_provider(alias)
    if cfg is None:
        return error_page(state, request, "There is no such page.", 404)
    ip = client_ip(request, state.config.trusted_proxies)
    limit = state.config.rate_limits.authorize_per_ip_per_minute
    if not await state.limiter.hit("sso_callback", ip, limit, 60):
        return error_page(state, request, "Too many requests. Wait a minute and try again.", 429)
    parsed = rp.split_state(request.query_params.get("state"))
    if parsed is None:
        return error_page(state, request, STALE, 400)
    loaded = await engine.load_flow(state, request, parsed[0])
    if not isinstance(loaded, LoginFlow):
        return error_page(state, request, STALE, 400)
    flow = loaded
    pending = rp.Pending.from_json(flow.scratch.get(PENDING))
    if pending is None or pending.alias != alias or not rp.state_matches(pending, parsed[1]):
        return error_page(state, request, STALE, 400)
    # Used once: gone from the stored flow before the code is redeemed.
    del flow.scratch[PENDING]
    if not await state.repo.update_flow(flow.id, flow.rev, flow.to_json()):
        return error_page(state, request, STALE, 409)
    flow.rev += 1
    step = STEPS.get(pending.step)
    if not isinstance(step, SsoStep) or not await engine.settings_owner_ok(state, request, flow):
        return error_page(state, request, engine.EXPIRED_FLOW, 400)
    ctx = await engine.context(state, request, flow)
    allowed = next_step(flow, ctx.facts)
    if step.name not in allowed.allowed:
        return error_page(state, request, engine.EXPIRED_FLOW, 400)
    ctx.action = engine.step_url(step.name, flow)
    if time.time() > pending.expired_at:
        result: Done | Again | Response = Again(TOO_SLOW.format(label=cfg.label), 400)
    else:
        result = await step.redeem(ctx, cfg, pending, dict(request.query_params))
    if isinstance(result, Again):
        # Back to the page the user chose from (the sign-in, the reauthentication, the
        # settings action), with the message; the flow goes on.
        flow.scratch[FLASH] = result.error
        failed = await engine.save_flow(state, request, flow)
        target = allowed.step if allowed.step is not None else step.name
        return failed or RedirectResponse(engine.step_url(target, flow), status_code=303)
    return await engine.after(ctx, step, allowed, result)
