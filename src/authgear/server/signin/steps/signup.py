"""Entry step ``signup`` (/signup): create an account with an email and a password."""

from __future__ import annotations

from typing import Any

from authgear.server.account_rules import normalize_email
from authgear.server.http import client_ip
from authgear.server.passwords import hash_password
from authgear.server.security import password_policy
from authgear.server.sessions import now_s
from authgear.server.signin import amr
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.storage import EmailTaken
from authgear.server.tokens import new_id

TAKEN = (
    "We could not create an account with these details. "
    "If you already have an account, sign in instead."
)


class SignupStep(Step):
    name = "signup"
    template = "signup.html"

    async def show(self, ctx: StepContext) -> dict[str, Any]:
        req = ctx.flow.authorization
        hint = req.login_hint if req is not None and req.login_hint else ""
        return {"email": hint[:320]}

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        state = ctx.state
        email_raw = form.get("email", "")[:320]
        password = form.get("password", "")
        email = normalize_email(email_raw)
        if email is None:
            return Again("Enter a valid email address.", 400, {"email": email_raw})
        ip = client_ip(ctx.request, state.config.trusted_proxies)
        if not await state.limiter.hit(
            "signup", ip, state.config.rate_limits.signup_per_ip_per_hour, 3600
        ):
            return Again(
                "Too many sign-ups from your network. Try again later.", 429, {"email": email}
            )
        # The password policy (accounts.py), after the limit: its zxcvbn score costs CPU.
        problems = await state.accounts.policy_problems(password, email)
        if problems:
            return Again(password_policy.summary(problems), 400, {"email": email})
        password_hash = await hash_password(password)
        try:
            user = await state.repo.create_user(
                user_id=new_id(), email=email, password_hash=password_hash, now=now_s()
            )
        except EmailTaken:
            # Generic on purpose: the page must not confirm which emails have accounts.
            return Again(TAKEN, 400, {"email": email})
        # Authgear counts authenticators created at sign-up in the amr.
        return Done(amr.PASSWORD, amr.PASSWORD_ID, user)


STEP = SignupStep()
