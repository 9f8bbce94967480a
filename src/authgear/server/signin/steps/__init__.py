"""The steps, by name. Adding a step: a module here with ``STEP``, its template, a line below,
and its rule in signin/policy.py (see docs/server.md "Sign-in steps")."""

from __future__ import annotations

from authgear.server.signin.steps import (
    approve_device,
    create_passkey,
    device_token,
    enroll_totp,
    login,
    passkey,
    reauth,
    recovery_code,
    recovery_codes,
    signup,
    sso,
    totp,
    verify_email,
)
from authgear.server.signin.steps.base import Step

STEPS: dict[str, Step] = {
    s.STEP.name: s.STEP
    for s in (
        login,
        signup,
        reauth,
        passkey,
        totp,
        recovery_code,
        device_token,
        enroll_totp,
        recovery_codes,
        create_passkey,
        verify_email,
        approve_device,
    )
}
# The upstream identity provider steps (one module, three steps).
STEPS.update({s.name: s for s in (sso.SSO, sso.LINK_SSO, sso.LINK_IDENTITY)})
