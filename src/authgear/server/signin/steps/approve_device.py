"""Step ``approve_device`` (RFC 8628 §3.3; ours): the signed-in user sees which app asks for
which scopes, when and from where the device asked, and approves or denies. The decision is
kept in the flow; signin/finish.py records it with the browser session once the flow ends
(the tokens carry that session's ``auth_time`` and ``amr``)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from authgear.server import device_flow
from authgear.server.sessions import now_s, session_from_cookie
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.ui import error_page

DECISION = "device_decision"
APPROVE = "approve"
DENY = "deny"
GONE = "This code has expired or was already used. Start the sign-in on your device again."
SIGNED_OUT = "You signed out in the meantime. Enter the code from your device again."


class ApproveDeviceStep(Step):
    name = "approve_device"
    template = "approve_device.html"

    async def show(self, ctx: StepContext) -> dict[str, Any]:
        code = await device_flow.pending(ctx.state, ctx.flow.device_approval or "")
        if code is None:
            return {"gone": GONE}
        return device_flow.describe(ctx.state, code, now_s())

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again | Response:
        decision = form.get("decision")
        if decision not in (APPROVE, DENY):
            return Again("Choose Approve or Deny.", 400)
        if await device_flow.pending(ctx.state, ctx.flow.device_approval or "") is None:
            return error_page(ctx.state, ctx.request, GONE, 400)
        session_id = ctx.flow.starter.get("session")
        if session_id:
            # Entered while signed in: still that session, for that user, in this browser.
            found = await session_from_cookie(ctx.state, ctx.request)
            if found is None or found[0].id != session_id or found[1].id != ctx.flow.user_id:
                return error_page(ctx.state, ctx.request, SIGNED_OUT, 400)
        ctx.flow.scratch[DECISION] = decision
        return Done()


STEP = ApproveDeviceStep()
