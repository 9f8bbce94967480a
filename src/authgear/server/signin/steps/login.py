"""Entry step ``login`` (/login): email and password on one page (docs/decisions.md)."""

from __future__ import annotations

from typing import Any

from authgear.server import events
from authgear.server.account_rules import normalize_email
from authgear.server.passwords import MAX_LENGTH, verify_password
from authgear.server.signin import amr, attempts
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.signin.steps.common import reserve_guess

WRONG_CREDENTIALS = "Incorrect email or password."


class LoginStep(Step):
    name = "login"
    template = "login.html"

    async def show(self, ctx: StepContext) -> dict[str, Any]:
        email, locked = await _expected_email(ctx)
        if not email:
            req = ctx.flow.authorization
            email = req.login_hint if req is not None and req.login_hint else ""
        return {"email": email[:320], "email_locked": locked}

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        """Both limits are counted *before* argon2 runs (signin/attempts.py)."""
        state = ctx.state
        email_raw = form.get("email", "")[:320]
        password = form.get("password", "")
        expected, locked = await _expected_email(ctx)
        if locked and (normalize_email(email_raw) or "").lower() != expected.lower():
            return Again(f"This sign-in is for {expected}.", 400, {"email": expected})
        reserved = await reserve_guess(ctx, normalize_email(email_raw) or email_raw)
        if isinstance(reserved, Again):
            return Again(reserved.error, reserved.status, {"email": email_raw})
        email = normalize_email(email_raw)
        user = await state.repo.get_user_by_email(email) if email else None
        hashed = user.password_hash if user and state.config.authentication.passwords else None
        ok = await verify_password(hashed, password[:MAX_LENGTH])
        if not ok or user is None or user.disabled:
            # The reserved attempt stays counted, in both limits.
            events.sign_in_failed(ctx.request, user.id if user else None)
            return Again(WRONG_CREDENTIALS, 401, {"email": email_raw})
        await attempts.succeeded(state, reserved)
        return Done(amr.PASSWORD, amr.PASSWORD_ID, user)


async def _expected_email(ctx: StepContext) -> tuple[str, bool]:
    """The email of the user an id_token_hint named (then the field is fixed)."""
    if ctx.flow.expected_user is None:
        return "", False
    user = await ctx.state.repo.get_user(ctx.flow.expected_user)
    return (user.email, True) if user is not None else ("", False)


STEP = LoginStep()
