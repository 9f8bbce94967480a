"""Step ``reauth``: a known user confirms it is them with their password (reauthentication,
a sign-in an app asked to be fresh, or changing security settings)."""

from __future__ import annotations

from authgear.server.passwords import verify_password
from authgear.server.signin import amr, attempts
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.signin.steps.common import reserve_guess

WRONG_PASSWORD = "Incorrect password."


class ReauthStep(Step):
    name = "reauth"
    template = "reauth.html"

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        user = ctx.user
        if user is None:
            return Again(WRONG_PASSWORD, 400)
        reserved = await reserve_guess(ctx, user.email)
        if isinstance(reserved, Again):
            return reserved
        hashed = user.password_hash if ctx.state.config.authentication.passwords else None
        if not await verify_password(hashed, form.get("password", "")[:1024]):
            return Again(WRONG_PASSWORD, 401)
        await attempts.succeeded(ctx.state, reserved)
        return Done(amr.PASSWORD, amr.PASSWORD_ID)


STEP = ReauthStep()
