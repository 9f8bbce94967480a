"""Helpers shared by steps: the guessable-secret checks and single-use WebAuthn challenges."""

from __future__ import annotations

import base64
import secrets
import time

from authgear.server.http import client_ip
from authgear.server.security.passkeys import CHALLENGE_TTL, RelyingParty, relying_party
from authgear.server.signin import attempts
from authgear.server.signin.steps.base import Again, StepContext
from authgear.server.state import ServerState
from authgear.server.storage.admin import Actor

TOO_MANY = 429
CHALLENGE = "webauthn_challenge"


def rp(state: ServerState) -> RelyingParty | None:
    return relying_party(state.issuer, state.config.app_name)


async def reserve_guess(ctx: StepContext, email: str) -> attempts.Reservation | Again:
    reserved = await attempts.reserve(ctx.state, ctx.request, attempts.account_key(email))
    if isinstance(reserved, attempts.Refused):
        return Again(reserved.message, TOO_MANY)
    return reserved


async def audit_self(ctx: StepContext, action: str, authenticator_id: str) -> None:
    """A user's own change to how they sign in, in the audit log."""
    user = ctx.user
    if user is None:
        return
    ip = client_ip(ctx.request, ctx.state.config.trusted_proxies)
    await ctx.state.admin.audit(
        Actor("self", user.id, user.email, ip),
        action,
        int(time.time()),
        target_type="user",
        target_id=user.id,
        details={"authenticator_id": authenticator_id},
    )


def new_challenge(ctx: StepContext, step: str) -> bytes:
    """A fresh challenge for ``step``, kept in the flow (saved with it) until used or stale."""
    challenge = secrets.token_bytes(32)
    ctx.flow.scratch[CHALLENGE] = {
        "step": step,
        "c": base64.urlsafe_b64encode(challenge).decode("ascii"),
        "exp": int(time.time()) + CHALLENGE_TTL,
    }
    return challenge


async def take_challenge(ctx: StepContext, step: str) -> bytes | None:
    """The flow's challenge for ``step``, removed from the stored flow *before* anything is
    verified (compare-and-set), so each challenge is checked at most once: a replayed or
    concurrent second submission finds none. None: no live challenge."""
    entry = ctx.flow.scratch.pop(CHALLENGE, None)
    if not isinstance(entry, dict) or entry.get("step") != step or not ctx.flow.saved:
        return None
    if not await ctx.state.repo.update_flow(ctx.flow.id, ctx.flow.rev, ctx.flow.to_json()):
        return None
    ctx.flow.rev += 1
    if int(entry.get("exp", 0)) <= time.time():
        return None
    return base64.urlsafe_b64decode(str(entry["c"]))
