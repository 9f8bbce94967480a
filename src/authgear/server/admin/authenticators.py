"""Administrators and a user's authenticators: what they are (kinds and times, never a secret,
a code or a key), resetting the second factor, removing a passkey. Shared by the admin API,
the portal and the CLI; every change is in the audit log."""

from __future__ import annotations

from typing import Any

from authgear.server.storage.admin import Actor, AdminRepository
from authgear.server.storage.authenticators import (
    PASSKEY,
    RECOVERY_CODE,
    TOTP,
    AuthenticatorStore,
    MfaReset,
)
from authgear.server.storage.models import Authenticator


def authenticator_json(a: Authenticator) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": a.id,
        "kind": a.kind,
        "label": a.label,
        "created_at": a.created_at,
        "last_used_at": a.last_used_at,
    }
    if a.kind == PASSKEY:
        out["aaguid"] = a.data.get("aaguid")
        out["backed_up"] = bool(a.data.get("backed_up"))
    return out


class AuthenticatorOps:
    def __init__(self, store: AdminRepository, authenticators: AuthenticatorStore) -> None:
        self.store = store
        self.authenticators = authenticators

    async def describe(self, user_id: str, now: int) -> dict[str, Any] | None:
        """The user's authenticators, or None when there is no such user."""
        user = await self.store.get_user(user_id)
        if user is None:
            return None
        found = await self.authenticators.list_for_user(user_id)
        codes = [a for a in found if a.kind == RECOVERY_CODE]
        return {
            "user_id": user.id,
            "email": user.email,
            "password": user.password_hash is not None,
            "authenticators": [authenticator_json(a) for a in found if a.kind != RECOVERY_CODE],
            "recovery_codes": {
                "total": len(codes),
                "unused": sum(1 for a in codes if a.last_used_at is None),
            },
            "trusted_devices": await self.authenticators.count_device_tokens(user_id, now),
        }

    async def reset_mfa(self, actor: Actor, now: int, user_id: str) -> MfaReset | None:
        """Delete the user's TOTP authenticators, recovery codes and trusted devices (for a
        user who lost their phone); passkeys stay. None: no such user."""
        user = await self.store.get_user(user_id)
        if user is None:
            return None
        reset = await self.authenticators.reset_mfa(user_id)
        await self.store.audit(
            actor,
            "user.reset_mfa",
            now,
            target_type="user",
            target_id=user_id,
            details={
                "email": user.email,
                "totp": reset.totp,
                "recovery_codes": reset.recovery_codes,
                "trusted_devices": reset.device_tokens,
            },
        )
        return reset

    async def remove_passkey(
        self, actor: Actor, now: int, user_id: str, authenticator_id: str
    ) -> Authenticator | None:
        removed = await self.authenticators.remove(user_id, authenticator_id, PASSKEY)
        if removed is None:
            return None
        user = await self.store.get_user(user_id)
        await self.store.audit(
            actor,
            "passkey.remove",
            now,
            target_type="user",
            target_id=user_id,
            details={
                "email": user.email if user else None,
                "authenticator_id": removed.id,
                "label": removed.label,
            },
        )
        return removed


__all__ = ["TOTP", "AuthenticatorOps", "authenticator_json"]
