"""Step ``verify_email``: with ``verification: required``, an unverified address is verified
(the 6-digit code or the link of the mail this step sends) before the sign-in finishes, for
sign-ups and for sign-ins alike (otherwise "sign up, abandon, sign in" would skip it).

The code checks, the resend cooldown and their limits are the account service's
(accounts.py), shared with the settings page's "verify" action.
"""

from __future__ import annotations

from typing import Any

from authgear.server.accounts import AccountError, CodeInvalid, TooMany
from authgear.server.http import client_ip
from authgear.server.signin.steps.base import Again, Done, Step, StepContext

SENT = "verification_sent"
NOT_YET = "Your address is not verified yet. Enter the code from the email."


class VerifyEmailStep(Step):
    name = "verify_email"
    template = "verify_email.html"

    async def show(self, ctx: StepContext) -> dict[str, Any]:
        user = ctx.user
        assert user is not None
        values: dict[str, Any] = {
            "email": user.email,
            "minutes": ctx.state.config.verification_code_lifetime // 60,
            "pending": True,
        }
        if not ctx.flow.scratch.get(SENT):
            # Sent once per flow when the step first shows; "Send a new code" asks again.
            ctx.flow.scratch[SENT] = True
            ctx.changed = True
            try:
                sent = await ctx.state.accounts.send_verification(user, _ip(ctx))
            except TooMany:
                values["error"] = "We could not send a new code just now; use the last one."
            else:
                values["notice"] = f"We sent a code to {sent.target}."
        return values

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        user = ctx.user
        assert user is not None
        action = form.get("action", "verify")
        try:
            if action == "resend":
                sent = await ctx.state.accounts.send_verification(user, _ip(ctx))
                return Again("", 200, {"notice": f"We sent a new code to {sent.target}."})
            if action == "continue":
                # Verified meanwhile by opening the link (the user row is read per request).
                if not user.email_verified:
                    raise CodeInvalid(NOT_YET)
            else:
                await ctx.state.accounts.verify_with_code(user, form.get("code", ""), _ip(ctx))
        except AccountError as e:
            return Again(e.message, e.status)
        # Verifying an address proves no authenticator: nothing for the amr.
        return Done()


def _ip(ctx: StepContext) -> str | None:
    return client_ip(ctx.request, ctx.state.config.trusted_proxies)


STEP = VerifyEmailStep()
