"""Admin operations with their audit entries, shared by the admin API, the portal and the CLI.

Each operation changes storage in one transaction and then records who did what; an operation
that found nothing to change records nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from authgear.server import events
from authgear.server.account_rules import normalize_email
from authgear.server.passwords import hash_password, password_problem
from authgear.server.storage import Repository, User
from authgear.server.storage.admin import (
    Actor,
    AdminKey,
    AdminRepository,
    SessionRecord,
)
from authgear.server.tokens import new_id

if TYPE_CHECKING:
    from authgear.server.accounts import AccountService
    from authgear.server.storage.accounts import PasswordSet

ROLE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_ROLES = 50


class InvalidInput(ValueError):
    """Input the operation refuses; the message is safe to show."""


def check_roles(roles: Sequence[str]) -> list[str]:
    if len(roles) > MAX_ROLES:
        raise InvalidInput(f"at most {MAX_ROLES} roles")
    out: list[str] = []
    for role in roles:
        if not ROLE_RE.match(role):
            raise InvalidInput("a role is 1 to 64 of A-Z a-z 0-9 _ . : -")
        if role not in out:
            out.append(role)
    return out


class AdminOps:
    def __init__(
        self, repo: Repository, store: AdminRepository, accounts: AccountService | None = None
    ) -> None:
        self.repo = repo
        self.store = store
        # Account recovery (send a reset, set a password): needs the mail and the policy.
        self._accounts = accounts

    @property
    def accounts(self) -> AccountService:
        if self._accounts is None:
            raise RuntimeError("AdminOps was built without an AccountService")
        return self._accounts

    async def create_user(
        self,
        actor: Actor,
        now: int,
        *,
        email: str,
        password: str | None,
        email_verified: bool = False,
        roles: Sequence[str] = (),
    ) -> User:
        """Raises InvalidInput, or storage's EmailTaken."""
        normalized = normalize_email(email)
        if normalized is None:
            raise InvalidInput("not a valid email address")
        if password is not None:
            problem = password_problem(password)
            if problem:
                raise InvalidInput(f"password not accepted: {problem}")
        clean_roles = check_roles(roles)
        password_hash = await hash_password(password) if password is not None else None
        user = await self.repo.create_user(
            user_id=new_id(),
            email=normalized,
            password_hash=password_hash,
            now=now,
            email_verified=email_verified,
            roles=clean_roles,
        )
        await self.store.audit(
            actor,
            "user.create",
            now,
            target_type="user",
            target_id=user.id,
            details={"email": user.email, "roles": clean_roles},
        )
        return user

    async def set_disabled(
        self, actor: Actor, now: int, user_id: str, disabled: bool
    ) -> User | None:
        user = await self.store.set_disabled(user_id, disabled, now)
        if user is not None:
            await self.store.audit(
                actor,
                "user.disable" if disabled else "user.enable",
                now,
                target_type="user",
                target_id=user.id,
                details={"email": user.email},
            )
        return user

    async def set_roles(
        self, actor: Actor, now: int, user_id: str, roles: Sequence[str]
    ) -> User | None:
        clean = check_roles(roles)
        before = await self.store.get_user(user_id)
        if before is None:
            return None
        user = await self.store.set_roles(user_id, clean, now)
        if user is not None:
            await self.store.audit(
                actor,
                "user.set_roles",
                now,
                target_type="user",
                target_id=user.id,
                details={"email": user.email, "before": before.roles, "after": clean},
            )
        return user

    async def delete_user(self, actor: Actor, now: int, user_id: str) -> User | None:
        user = await self.store.get_user(user_id)
        if user is None or not await self.store.delete_user(user_id):
            return None
        await self.store.audit(
            actor,
            "user.delete",
            now,
            target_type="user",
            target_id=user_id,
            details={"email": user.email},
        )
        return user

    async def revoke_session(
        self, actor: Actor, now: int, session_id: str, *, user_id: str | None = None
    ) -> SessionRecord | None:
        revoked = await self.store.revoke_session(session_id, user_id=user_id)
        if revoked is not None:
            events.session_revoked(revoked.id, revoked.kind, revoked.user_id, actor.type)
            owner = await self.store.get_user(revoked.user_id)
            await self.store.audit(
                actor,
                "session.revoke",
                now,
                target_type="session",
                target_id=revoked.id,
                details={
                    "user_id": revoked.user_id,
                    "email": owner.email if owner else None,
                    "kind": revoked.kind,
                    "client_id": revoked.client_id,
                },
            )
        return revoked

    async def revoke_all(self, actor: Actor, now: int, user_id: str) -> int | None:
        """How many sessions ended; None when there is no such user."""
        user = await self.store.get_user(user_id)
        if user is None:
            return None
        count = await self.store.revoke_all_sessions(user_id)
        events.session_revoked("*", "all", user_id, actor.type)
        await self.store.audit(
            actor,
            "session.revoke_all",
            now,
            target_type="user",
            target_id=user_id,
            details={"email": user.email, "revoked": count},
        )
        return count

    async def create_key(self, actor: Actor, now: int, name: str) -> tuple[AdminKey, str]:
        key, secret = await self.store.create_key(name, now)
        await self.store.audit(
            actor,
            "key.create",
            now,
            target_type="api_key",
            target_id=key.id,
            details={"name": name},
        )
        return key, secret

    async def revoke_key(self, actor: Actor, now: int, key_id: str) -> AdminKey | None:
        key = await self.store.revoke_key(key_id, now)
        if key is not None:
            await self.store.audit(
                actor,
                "key.revoke",
                now,
                target_type="api_key",
                target_id=key.id,
                details={"name": key.name},
            )
        return key

    # -- account recovery -------------------------------------------------------------------
    async def send_reset(self, actor: Actor, now: int, user_id: str) -> User | None:
        """Mail the user a password reset code and link (no limits: an administrator asks)."""
        user = await self.store.get_user(user_id)
        if user is None:
            return None
        if user.disabled:
            raise InvalidInput("the user is disabled; enable them first")
        await self.accounts.admin_send_reset(user)
        await self.store.audit(
            actor,
            "user.send_reset",
            now,
            target_type="user",
            target_id=user.id,
            details={"email": user.email},
        )
        return user

    async def mark_verified(
        self, actor: Actor, now: int, user_id: str, verified: bool = True
    ) -> User | None:
        user = await self.accounts.store.mark_verified(user_id, now, verified)
        if user is not None:
            await self.store.audit(
                actor,
                "user.mark_verified" if verified else "user.mark_unverified",
                now,
                target_type="user",
                target_id=user.id,
                details={"email": user.email},
            )
        return user

    async def set_password(
        self,
        actor: Actor,
        now: int,
        user_id: str,
        password: str,
        *,
        end_sessions: bool | None = None,
    ) -> PasswordSet | None:
        """A new password under the password policy; the user gets a notice, and their
        sessions end when asked (default: ``password_change_ends_sessions``). Raises
        InvalidInput naming every rule the password breaks."""
        from authgear.server.accounts import PolicyViolated

        user = await self.store.get_user(user_id)
        if user is None:
            return None
        try:
            result = await self.accounts.admin_set_password(
                user, password, end_sessions=end_sessions
            )
        except PolicyViolated as e:
            raise InvalidInput(f"password not accepted: {e.message}") from None
        await self.store.audit(
            actor,
            "user.set_password",
            now,
            target_type="user",
            target_id=user.id,
            details={"email": user.email, "sessions_ended": result.ended_sessions},
        )
        return result
