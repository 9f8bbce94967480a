"""Storage of users' accounts at upstream identity providers (table ``identities``). Every
method is one short transaction. A new user and their first identity are created together, and
unlinking checks, in the same transaction, that the user keeps a way to sign in."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from authgear.server.storage import schema as t
from authgear.server.storage.authenticators import PASSKEY
from authgear.server.storage.db import Conn, Database
from authgear.server.storage.models import EmailTaken, User


@dataclass(frozen=True, slots=True)
class Identity:
    id: str
    user_id: str
    provider: str
    subject: str
    email: str | None
    email_verified: bool
    claims: dict[str, Any] = field(repr=False)
    created_at: int
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class Asserted:
    """What a provider said about its user (sso/rp.py), as stored on the identity."""

    provider: str
    subject: str
    email: str | None
    email_verified: bool
    claims: dict[str, Any] = field(default_factory=dict, repr=False)


class IdentityTaken(Exception):
    """This provider account is linked to a user already."""

    def __init__(self, identity: Identity) -> None:
        super().__init__("identity already linked")
        self.identity = identity


class LastSignInMethod(Exception):
    """Unlinking would leave the user no way to sign in."""


_NAMES = tuple(f.name for f in fields(Identity))


def _identity(r: Mapping[Any, Any]) -> Identity:
    return Identity(**{name: r[name] for name in _NAMES})


def _row(identity_id: str, user_id: str, a: Asserted, now: int) -> dict[str, Any]:
    return {
        "id": identity_id,
        "user_id": user_id,
        "provider": a.provider,
        "subject": a.subject,
        "email": a.email,
        "email_verified": a.email_verified,
        "claims": dict(a.claims),
        "created_at": now,
        "last_used_at": now,
    }


class IdentityStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find(self, provider: str, subject: str) -> Identity | None:
        i = t.identities
        q = select(i).where(i.c.provider == provider, i.c.subject == subject)
        async with self.db.connect() as conn:
            r = (await conn.execute(q)).mappings().first()
        return _identity(r) if r else None

    async def get(self, user_id: str, identity_id: str) -> Identity | None:
        i = t.identities
        q = select(i).where(i.c.id == identity_id, i.c.user_id == user_id)
        async with self.db.connect() as conn:
            r = (await conn.execute(q)).mappings().first()
        return _identity(r) if r else None

    async def list_for_user(self, user_id: str) -> list[Identity]:
        i = t.identities
        q = select(i).where(i.c.user_id == user_id).order_by(i.c.created_at, i.c.id)
        async with self.db.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [_identity(r) for r in rows]

    async def create_user(self, asserted: Asserted, email: str, now: int) -> tuple[User, Identity]:
        """A new user without a password, and their identity, in one transaction. The user's
        ``email_verified`` is the provider's assertion. Raises :class:`EmailTaken` (an account
        has this email) or :class:`IdentityTaken` (a concurrent sign-in created it first)."""
        user_id, identity_id = str(uuid.uuid4()), str(uuid.uuid4())
        user_row: dict[str, Any] = {
            "id": user_id,
            "email": email,
            "email_key": email.lower(),
            "password_hash": None,
            "email_verified": asserted.email_verified,
            "roles": [],
            "standard_attributes": {},
            "custom_attributes": {},
            "disabled": False,
            "created_at": now,
            "updated_at": now,
            "last_login_at": None,
            "authenticator_count": 0,
        }
        identity_row = _row(identity_id, user_id, asserted, now)
        try:
            async with self.db.begin() as conn:
                await conn.execute(insert(t.users).values(**user_row))
                await conn.execute(insert(t.identities).values(**identity_row))
        except IntegrityError:
            existing = await self.find(asserted.provider, asserted.subject)
            if existing is not None:
                raise IdentityTaken(existing) from None
            raise EmailTaken(email) from None
        user = User(**{k: v for k, v in user_row.items() if k != "email_key"})
        return user, _identity(identity_row)

    async def link(self, user_id: str, asserted: Asserted, now: int) -> Identity:
        """Link the provider account to the user. Returns the identity (the existing one when it
        is this user's already). Raises :class:`IdentityTaken` when another user has it."""
        found = await self.find(asserted.provider, asserted.subject)
        if found is not None:
            if found.user_id != user_id:
                raise IdentityTaken(found)
            return found
        row = _row(str(uuid.uuid4()), user_id, asserted, now)
        try:
            async with self.db.begin() as conn:
                await conn.execute(insert(t.identities).values(**row))
        except IntegrityError:
            again = await self.find(asserted.provider, asserted.subject)
            if again is None:
                raise
            if again.user_id != user_id:
                raise IdentityTaken(again) from None
            return again
        return _identity(row)

    async def record_use(self, identity_id: str, asserted: Asserted, now: int) -> None:
        """A sign-in with this identity: its time, and the provider's latest email and claims."""
        i = t.identities
        async with self.db.begin() as conn:
            await conn.execute(
                update(i)
                .where(i.c.id == identity_id)
                .values(
                    last_used_at=now,
                    email=asserted.email,
                    email_verified=asserted.email_verified,
                    claims=dict(asserted.claims),
                )
            )

    async def unlink(
        self,
        user_id: str,
        identity_id: str,
        *,
        usable_providers: Collection[str],
        password_counts: bool,
        passkeys_count: bool,
        spare: int = 0,
    ) -> Identity | None:
        """Remove one identity of the user. None: no such identity. Raises
        :class:`LastSignInMethod` when the user would be left without a password, a passkey or
        another identity of a configured provider (checked in the same transaction, with the
        user's row locked, so two concurrent unlinks cannot each leave the other's last).
        ``spare``: ways counted on top (an administrator's forced unlink passes 1)."""
        i = t.identities
        async with self.db.begin() as conn:
            # Lock the user's row first: concurrent unlinks of one user run one after the other.
            await conn.execute(
                update(t.users)
                .where(t.users.c.id == user_id)
                .values(updated_at=t.users.c.updated_at)
            )
            row = (
                (await conn.execute(select(i).where(i.c.id == identity_id, i.c.user_id == user_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            left = await _methods_left(
                conn, user_id, identity_id, usable_providers, password_counts, passkeys_count
            )
            if left + spare == 0:
                raise LastSignInMethod()
            await conn.execute(delete(i).where(i.c.id == identity_id))
        return _identity(row)


async def _methods_left(
    conn: Conn,
    user_id: str,
    without: str,
    usable_providers: Collection[str],
    password_counts: bool,
    passkeys_count: bool,
) -> int:
    """Ways to sign in the user keeps once identity ``without`` is gone."""
    i, a, u = t.identities, t.authenticators, t.users
    others = (
        await conn.execute(
            select(func.count())
            .select_from(i)
            .where(i.c.user_id == user_id, i.c.id != without, i.c.provider.in_(usable_providers))
        )
    ).scalar_one()
    passkeys = 0
    if passkeys_count:
        passkeys = (
            await conn.execute(
                select(func.count())
                .select_from(a)
                .where(a.c.user_id == user_id, a.c.kind == PASSKEY)
            )
        ).scalar_one()
    password = 0
    if password_counts:
        hashed = (
            await conn.execute(select(u.c.password_hash).where(u.c.id == user_id))
        ).scalar_one_or_none()
        password = int(hashed is not None)
    return int(others) + int(passkeys) + password


__all__ = ["Asserted", "EmailTaken", "Identity", "IdentityStore", "IdentityTaken"]
