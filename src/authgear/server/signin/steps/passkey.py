"""Step ``passkey``: sign in with a passkey (WebAuthn assertion). From the entry page without
an email (any discoverable credential, or conditional UI in the email field), or for a known
user (reauthentication: only their credentials). A passkey signs in alone: it needs user
verification, and no second factor follows (accounts spec §3)."""

from __future__ import annotations

from typing import Any

from authgear.server.http import client_ip
from authgear.server.security.passkeys import (
    PasskeyError,
    RelyingParty,
    authentication_options,
    parse_assertion,
    verify_assertion,
)
from authgear.server.sessions import now_s
from authgear.server.signin import amr
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.signin.steps.common import TOO_MANY, new_challenge, rp, take_challenge
from authgear.server.state import ServerState
from authgear.server.storage.authenticators import PASSKEY

REFUSED = "That passkey could not sign you in. Try again, or use your password."
EXPIRED = "The passkey request expired. Try again."
BUCKET = "passkey"


class PasskeyStep(Step):
    name = "passkey"
    template = "passkey.html"
    ceremony = True

    async def options(self, ctx: StepContext) -> dict[str, Any] | None:
        party = rp(ctx.state)
        if party is None:
            return None
        allow = None
        if ctx.user is not None:
            allow = [a.credential_id for a in ctx.of_kind(PASSKEY) if a.credential_id]
        challenge = new_challenge(ctx, self.name)
        return authentication_options(party, challenge=challenge, allow=allow)

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        state = ctx.state
        party = rp(state)
        challenge = await take_challenge(ctx, self.name)
        if party is None or challenge is None:
            return Again(EXPIRED, 400)
        ip = client_ip(ctx.request, state.config.trusted_proxies)
        limit = state.config.rate_limits.password_failures_per_ip_per_minute
        if not await state.limiter.hit(BUCKET, ip, limit, 60):
            return Again("Too many attempts. Wait a minute and try again.", TOO_MANY)
        result = await _verify(ctx, party, challenge, form.get("credential", ""))
        if isinstance(result, Done):
            await state.limiter.refund(BUCKET, ip, 60)
        return result


async def _verify(
    ctx: StepContext, party: RelyingParty, challenge: bytes, raw: str
) -> Done | Again:
    state: ServerState = ctx.state
    try:
        assertion = parse_assertion(raw)
    except PasskeyError:
        return Again(REFUSED, 400)
    found = await state.authenticators.get_passkey(assertion.credential_id)
    # A credential registered here, of the user this flow is for (if it is for one), whose
    # user handle (when sent) names that user too.
    expected = ctx.flow.user_id or ctx.flow.expected_user
    if (
        found is None
        or found.public_key is None
        or (expected is not None and found.user_id != expected)
        or (assertion.user_handle is not None and assertion.user_handle != found.user_id)
    ):
        return Again(REFUSED, 401)
    user = await state.repo.get_user(found.user_id)
    if user is None or user.disabled:
        return Again(REFUSED, 401)
    old = found.counter or 0
    try:
        new = verify_assertion(party, assertion, challenge, found.public_key, old)
    except PasskeyError:
        return Again(REFUSED, 401)
    if not await state.authenticators.record_passkey_use(found.id, old, new, now_s()):
        return Again(REFUSED, 401)
    return Done(amr.PASSKEY, found.id, user if ctx.flow.user_id is None else None)


STEP = PasskeyStep()
