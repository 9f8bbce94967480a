"""Step ``create_passkey`` (a settings action): register a passkey for the signed-in user
(WebAuthn attestation), with the user's passkeys in ``excludeCredentials``."""

from __future__ import annotations

import time
from typing import Any

from authgear.server.security.passkeys import (
    PasskeyError,
    registration_options,
    verify_registration,
)
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.signin.steps.common import audit_self, new_challenge, rp, take_challenge
from authgear.server.storage.authenticators import PASSKEY
from authgear.server.tokens import new_id

REFUSED = "The passkey could not be added. Try again."
DUPLICATE = "This passkey is registered already."
MAX_LABEL = 60


class CreatePasskeyStep(Step):
    name = "create_passkey"
    template = "create_passkey.html"
    ceremony = True

    async def options(self, ctx: StepContext) -> dict[str, Any] | None:
        party = rp(ctx.state)
        if party is None or ctx.user is None:
            return None
        exclude = [a.credential_id for a in ctx.of_kind(PASSKEY) if a.credential_id]
        challenge = new_challenge(ctx, self.name)
        return registration_options(
            party,
            user_id=ctx.user.id,
            user_name=ctx.user.email,
            exclude=exclude,
            challenge=challenge,
        )

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        party = rp(ctx.state)
        challenge = await take_challenge(ctx, self.name)
        if party is None or challenge is None or ctx.user is None:
            return Again(REFUSED, 400)
        try:
            new = verify_registration(party, form.get("credential", ""), challenge)
        except PasskeyError:
            return Again(REFUSED, 400)
        label = " ".join(form.get("label", "").split())[:MAX_LABEL]
        if not label or not label.isprintable():
            label = "Passkey added " + time.strftime("%Y-%m-%d", time.gmtime())
        authenticator_id = new_id()
        if not await ctx.state.authenticators.add_passkey(
            authenticator_id=authenticator_id,
            user_id=ctx.user.id,
            label=label,
            credential_id=new.credential_id,
            public_key=new.public_key,
            sign_count=new.sign_count,
            data={"aaguid": new.aaguid, "backed_up": new.backed_up, "transports": new.transports},
            now=int(time.time()),
        ):
            return Again(DUPLICATE, 409)
        await audit_self(ctx, "passkey.add", authenticator_id)
        return Done((), None)


STEP = CreatePasskeyStep()
