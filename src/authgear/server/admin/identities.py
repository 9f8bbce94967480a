"""Administrators and a user's linked upstream identities (issue 15): what they are (the
provider, its subject and email, when linked and last used) and unlinking one. Shared by the
admin API, the portal and the CLI; every unlink is in the audit log. Unlinking the user's last
way to sign in is refused unless ``force`` (the user can still reset a password by email)."""

from __future__ import annotations

from typing import Any

from authgear.server.config import ServerConfig
from authgear.server.security.passkeys import relying_party
from authgear.server.storage.admin import Actor, AdminRepository
from authgear.server.storage.identities import Identity, IdentityStore, LastSignInMethod


def identity_json(i: Identity, config: ServerConfig) -> dict[str, Any]:
    cfg = config.identity_provider(i.provider)
    return {
        "id": i.id,
        "provider": i.provider,
        "provider_name": cfg.label if cfg is not None else None,
        "subject": i.subject,
        "email": i.email,
        "email_verified": i.email_verified,
        "name": i.claims.get("name") or i.claims.get("login"),
        "created_at": i.created_at,
        "last_used_at": i.last_used_at,
    }


class IdentityOps:
    def __init__(
        self, store: AdminRepository, identities: IdentityStore, config: ServerConfig
    ) -> None:
        self.store = store
        self.identities = identities
        self.config = config

    async def describe(self, user_id: str) -> dict[str, Any] | None:
        """The user's identities, or None when there is no such user."""
        user = await self.store.get_user(user_id)
        if user is None:
            return None
        found = await self.identities.list_for_user(user_id)
        return {
            "user_id": user.id,
            "email": user.email,
            "identities": [identity_json(i, self.config) for i in found],
        }

    async def unlink(
        self, actor: Actor, now: int, user_id: str, identity_id: str, *, force: bool = False
    ) -> Identity | None:
        """None: no such identity of this user. Raises LastSignInMethod (unless ``force``)."""
        auth = self.config.authentication
        usable = [p.alias for p in self.config.identity_providers]
        passkeys = auth.passkeys and relying_party(self.config.issuer, self.config.app_name)
        removed = await self.identities.unlink(
            user_id,
            identity_id,
            # Forced: every other way "counts" as one more, so the check always passes.
            usable_providers=usable,
            password_counts=auth.passwords,
            passkeys_count=passkeys is not None,
            spare=1 if force else 0,
        )
        if removed is None:
            return None
        user = await self.store.get_user(user_id)
        await self.store.audit(
            actor,
            "identity.unlink",
            now,
            target_type="user",
            target_id=user_id,
            details={
                "email": user.email if user else None,
                "identity_id": removed.id,
                "provider": removed.provider,
                "subject": removed.subject,
                "forced": force,
            },
        )
        return removed


__all__ = ["IdentityOps", "LastSignInMethod", "identity_json"]
