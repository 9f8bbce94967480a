"""Step ``totp``: the code of the user's authenticator app (RFC 6238), once per time step."""

from __future__ import annotations

import time
from typing import Any

from authgear.server.security.otp import totp_match
from authgear.server.security.sealing import totp_purpose
from authgear.server.signin import amr, attempts
from authgear.server.signin.flow import REAUTH
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.signin.steps.common import reserve_guess
from authgear.server.storage.authenticators import TOTP

WRONG_CODE = "That code is not right, or was used already. Enter the current code."


def may_trust_device(ctx: StepContext) -> bool:
    flow = ctx.flow
    return (
        ctx.facts.device_tokens_enabled
        and flow.intent != REAUTH
        and flow.reauth_session is None
        and not flow.require_mfa
    )


class TotpStep(Step):
    name = "totp"
    template = "totp.html"

    async def show(self, ctx: StepContext) -> dict[str, Any]:
        days = ctx.state.config.authentication.device_token.expire_in_days
        return {"trust_device": may_trust_device(ctx), "trust_days": days}

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        user = ctx.user
        found = ctx.of_kind(TOTP)
        if user is None or not found:
            return Again(WRONG_CODE, 400)
        authenticator = found[0]
        reserved = await reserve_guess(ctx, user.email)
        if isinstance(reserved, Again):
            return reserved
        assert authenticator.secret is not None
        secret = ctx.state.sealer.decrypt(authenticator.secret, totp_purpose(authenticator.id))
        step = totp_match(secret, form.get("code", "")[:32], time.time(), authenticator.counter)
        # A code of an accepted time step is a replay: refused, and counted as a failure.
        if step is None or not await ctx.state.authenticators.accept_totp_step(
            authenticator.id, step, int(time.time())
        ):
            return Again(WRONG_CODE, 401)
        await attempts.succeeded(ctx.state, reserved)
        if form.get("trust_device") == "on" and may_trust_device(ctx):
            ctx.flow.scratch["trust_device"] = True
        return Done(amr.TOTP, authenticator.id)


STEP = TotpStep()
