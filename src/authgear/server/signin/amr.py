"""Authentication method references (RFC 8176) with Authgear's values and rules (accounts spec
§1.2-1.3, Authflow's ``CollectAMR``). Pure."""

from __future__ import annotations

from collections.abc import Iterable

from authgear.server.signin.flow import StepDone

PASSWORD = ("pwd", "x_primary_password")
PASSKEY = ("x_passkey", "x_primary_passkey")
TOTP = ("otp", "x_secondary_totp")
RECOVERY_CODE = ("x_recovery_code",)
DEVICE_TOKEN = ("x_device_token",)

RECOVERY_CODE_ID = "recovery_code"
DEVICE_TOKEN_ID = "device_token"
PASSWORD_ID = "password"


def collect_amr(steps: Iterable[StepDone]) -> list[str]:
    """Every step's values, plus ``mfa`` when more than one distinct authenticator was used or
    created, or one together with a recovery code. A trusted device counts for neither. Sorted
    and without repeats (Authgear's order)."""
    values: set[str] = set()
    authenticators: set[str] = set()
    recovery = False
    for step in steps:
        values.update(step.amr)
        if step.authenticator == RECOVERY_CODE_ID:
            recovery = True
        elif step.authenticator is not None and step.authenticator != DEVICE_TOKEN_ID:
            authenticators.add(step.authenticator)
    if len(authenticators) > 1 or (len(authenticators) == 1 and recovery):
        values.add("mfa")
    return sorted(values)


def multi_factor(amr: Iterable[str]) -> bool:
    """Whether a sign-in with this amr satisfies a demand for a second factor: ``mfa``, or a
    passkey (the passkey ceremony requires user verification: possession plus a PIN or
    biometric; NIST SP 800-63B's multi-factor cryptographic authenticator)."""
    values = set(amr)
    return "mfa" in values or "x_passkey" in values
