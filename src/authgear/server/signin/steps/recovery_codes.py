"""Step ``recovery_codes``: the new recovery codes, shown until the user says they kept them;
then they are gone from the flow (only their hashes are stored)."""

from __future__ import annotations

from typing import Any

from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.signin.steps.enroll_totp import NEW_CODES, pending_codes


class RecoveryCodesStep(Step):
    name = "recovery_codes"
    template = "recovery_codes.html"

    async def show(self, ctx: StepContext) -> dict[str, Any]:
        return {"codes": pending_codes(ctx)}

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        ctx.flow.scratch.pop(NEW_CODES, None)
        return Done()


STEP = RecoveryCodesStep()
