"""Automatic step ``device_token``: this browser was trusted after a second factor (the
``mfa_device_token`` cookie, checked by the engine); it passes the second factor silently."""

from __future__ import annotations

from authgear.server.signin import amr
from authgear.server.signin.steps.base import Again, Done, Step, StepContext


class DeviceTokenStep(Step):
    name = "device_token"
    auto = True

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        if not ctx.facts.device_trusted:
            return Again("This device is not trusted.", 400)
        return Done(amr.DEVICE_TOKEN, amr.DEVICE_TOKEN_ID)


STEP = DeviceTokenStep()
