"""Step ``enroll_totp``: set up an authenticator app. The secret is made when the page is
first shown (kept sealed in the flow), shown as a QR code drawn here (segno, inline SVG) and as
text; the app is added only once a code from it is right. New recovery codes come with it when
the user has none (Authgear's ``generateRecoveryCodes``)."""

from __future__ import annotations

import json
import time
from typing import Any

import segno

from authgear.server.security.otp import (
    format_recovery_code,
    new_recovery_codes,
    new_totp_secret,
    recovery_code_hash,
    totp_match,
    totp_uri,
)
from authgear.server.security.sealing import totp_purpose
from authgear.server.signin import amr
from authgear.server.signin.secrets import mfa_key
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.signin.steps.common import audit_self
from authgear.server.tokens import new_id

PENDING = "totp_secret"
NEW_CODES = "new_codes"
FLOW_PURPOSE = "pending totp secret"
CODES_PURPOSE = "new recovery codes"
WRONG = "That code is not right. Check that your device's clock is correct and try again."
EXISTS = "You already have an authenticator app set up."


def _grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


class EnrollTotpStep(Step):
    name = "enroll_totp"
    template = "enroll_totp.html"

    def _secret(self, ctx: StepContext) -> str:
        sealed = ctx.flow.scratch.get(PENDING)
        if isinstance(sealed, str):
            return ctx.state.sealer.decrypt(sealed, FLOW_PURPOSE)
        secret = new_totp_secret()
        ctx.flow.scratch[PENDING] = ctx.state.sealer.encrypt(secret, FLOW_PURPOSE)
        ctx.changed = True
        return secret

    async def show(self, ctx: StepContext) -> dict[str, Any]:
        assert ctx.user is not None
        secret = self._secret(ctx)
        uri = totp_uri(secret, ctx.user.email, ctx.state.issuer)
        qr = segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff")
        return {"qr_svg": qr, "secret": _grouped(secret), "otpauth_uri": uri}

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        user = ctx.user
        sealed = ctx.flow.scratch.get(PENDING)
        if user is None or not isinstance(sealed, str):
            return Again(WRONG, 400)
        secret = ctx.state.sealer.decrypt(sealed, FLOW_PURPOSE)
        now = time.time()
        step = totp_match(secret, form.get("code", "")[:32], now, None)
        if step is None:
            return Again(WRONG, 400)
        codes: list[str] = []
        if (
            not ctx.state.config.authentication.recovery_code.disabled
            and not ctx.facts.has_recovery_codes
        ):
            codes = new_recovery_codes(ctx.state.config.authentication.recovery_code.count)
        key = await mfa_key(ctx.state)
        authenticator_id = new_id()
        if not await ctx.state.authenticators.add_totp(
            authenticator_id=authenticator_id,
            user_id=user.id,
            sealed_secret=ctx.state.sealer.encrypt(secret, totp_purpose(authenticator_id)),
            accepted_step=step,
            now=int(now),
            recovery_code_hashes=[recovery_code_hash(key, user.id, c) for c in codes],
        ):
            return Again(EXISTS, 409)
        del ctx.flow.scratch[PENDING]
        await audit_self(ctx, "totp.add", authenticator_id)
        if codes:
            ctx.flow.scratch[NEW_CODES] = ctx.state.sealer.encrypt(json.dumps(codes), CODES_PURPOSE)
        return Done(amr.TOTP, authenticator_id)


def pending_codes(ctx: StepContext) -> list[str]:
    sealed = ctx.flow.scratch.get(NEW_CODES)
    if not isinstance(sealed, str):
        return []
    codes = json.loads(ctx.state.sealer.decrypt(sealed, CODES_PURPOSE))
    return [format_recovery_code(str(c)) for c in codes]


STEP = EnrollTotpStep()
