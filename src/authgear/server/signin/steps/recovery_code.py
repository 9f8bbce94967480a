"""Step ``recovery_code``: one of the user's recovery codes instead of the TOTP code; each
works once."""

from __future__ import annotations

from authgear.server.security.otp import normalise_recovery_code, recovery_code_hash
from authgear.server.sessions import now_s
from authgear.server.signin import amr, attempts
from authgear.server.signin.secrets import mfa_key
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.signin.steps.common import reserve_guess

MALFORMED = "A recovery code has 10 letters and digits, like 4K7QD-9ZMXB."
WRONG = "That recovery code is not right, or was used already."


class RecoveryCodeStep(Step):
    name = "recovery_code"
    template = "recovery_code.html"

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        user = ctx.user
        if user is None:
            return Again(WRONG, 400)
        code = normalise_recovery_code(form.get("code", ""))
        if code is None:
            # Not a possible code: no guess was made, nothing is counted.
            return Again(MALFORMED, 400)
        reserved = await reserve_guess(ctx, user.email)
        if isinstance(reserved, Again):
            return reserved
        digest = recovery_code_hash(await mfa_key(ctx.state), user.id, code)
        if not await ctx.state.authenticators.consume_recovery_code(user.id, digest, now_s()):
            return Again(WRONG, 401)
        await attempts.succeeded(ctx.state, reserved)
        return Done(amr.RECOVERY_CODE, amr.RECOVERY_CODE_ID)


STEP = RecoveryCodeStep()
