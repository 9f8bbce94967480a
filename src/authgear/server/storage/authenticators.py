"""Storage of second factors and passkeys: TOTP authenticators, recovery codes, passkeys
(table ``authenticators``) and trusted devices (``mfa_device_tokens``). Every method is one
short transaction; whatever changes how many TOTP authenticators and passkeys a user has also
updates ``users.authenticator_count`` in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from authgear.server.storage import schema as t
from authgear.server.storage.db import Conn, Database
from authgear.server.storage.models import Authenticator

TOTP = "totp"
PASSKEY = "passkey"
RECOVERY_CODE = "recovery_code"
# Kinds that count as authenticators (users.authenticator_count); recovery codes do not.
COUNTED = (TOTP, PASSKEY)
SECONDARY = (TOTP,)
_NAMES = tuple(f.name for f in fields(Authenticator))


def _authenticator(r: Mapping[Any, Any]) -> Authenticator:
    return Authenticator(**{name: r[name] for name in _NAMES})


@dataclass(frozen=True, slots=True)
class MfaReset:
    """What resetting a user's second factor deleted."""

    totp: int
    recovery_codes: int
    device_tokens: int


async def _recount(conn: Conn, user_id: str) -> None:
    a = t.authenticators
    count = (
        select(func.count())
        .select_from(a)
        .where(a.c.user_id == user_id, a.c.kind.in_(COUNTED))
        .scalar_subquery()
    )
    await conn.execute(
        update(t.users).where(t.users.c.id == user_id).values(authenticator_count=count)
    )


async def _drop_orphans(conn: Conn, user_id: str) -> tuple[int, int]:
    """Authgear's ``removeOrphans``: without a secondary authenticator left, recovery codes
    and trusted devices go too. Returns (codes, device tokens) deleted."""
    a = t.authenticators
    left = (
        await conn.execute(
            select(func.count())
            .select_from(a)
            .where(a.c.user_id == user_id, a.c.kind.in_(SECONDARY))
        )
    ).scalar_one()
    if left:
        return 0, 0
    codes = await conn.execute(delete(a).where(a.c.user_id == user_id, a.c.kind == RECOVERY_CODE))
    devices = await conn.execute(
        delete(t.mfa_device_tokens).where(t.mfa_device_tokens.c.user_id == user_id)
    )
    return int(codes.rowcount or 0), int(devices.rowcount or 0)


class AuthenticatorStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_for_user(self, user_id: str) -> list[Authenticator]:
        a = t.authenticators
        q = select(a).where(a.c.user_id == user_id).order_by(a.c.created_at, a.c.id)
        async with self.db.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [_authenticator(r) for r in rows]

    async def get(self, user_id: str, authenticator_id: str) -> Authenticator | None:
        a = t.authenticators
        q = select(a).where(a.c.id == authenticator_id, a.c.user_id == user_id)
        async with self.db.connect() as conn:
            r = (await conn.execute(q)).mappings().first()
        return _authenticator(r) if r else None

    # -- TOTP ---------------------------------------------------------------------------------
    async def add_totp(
        self,
        *,
        authenticator_id: str,
        user_id: str,
        sealed_secret: str,
        accepted_step: int,
        now: int,
        recovery_code_hashes: Sequence[str],
    ) -> bool:
        """Enrol a TOTP authenticator (the enrolment code's step counts as used) and, when the
        user has no recovery codes yet, store the given ones. False: the user already has a
        TOTP authenticator (one per user; a concurrent second enrolment loses)."""
        a = t.authenticators
        async with self.db.begin() as conn:
            # Lock the user's row first, so concurrent enrolments run one after the other.
            await conn.execute(
                update(t.users).where(t.users.c.id == user_id).values(updated_at=now)
            )
            existing = (
                await conn.execute(
                    select(a.c.kind).where(a.c.user_id == user_id, a.c.kind.in_((TOTP,)))
                )
            ).first()
            if existing is not None:
                return False
            await conn.execute(
                insert(a).values(
                    id=authenticator_id,
                    user_id=user_id,
                    kind=TOTP,
                    label=None,
                    secret=sealed_secret,
                    counter=accepted_step,
                    credential_id=None,
                    public_key=None,
                    data={},
                    created_at=now,
                    last_used_at=now,
                )
            )
            if recovery_code_hashes:
                await _replace_codes(conn, user_id, recovery_code_hashes, now)
            await _recount(conn, user_id)
        return True

    async def sealed_totp_secrets(self) -> list[tuple[str, str]]:
        """Every TOTP authenticator's id and sealed secret (a key-encryption key rotation
        re-seals them: keys.reencrypt)."""
        a = t.authenticators
        q = select(a.c.id, a.c.secret).where(a.c.kind == TOTP, a.c.secret.is_not(None))
        async with self.db.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [(str(r["id"]), str(r["secret"])) for r in rows]

    async def replace_totp_secret(self, authenticator_id: str, old: str, new: str) -> int:
        """Store ``new`` if the row still holds ``old`` (several processes may re-seal at once);
        how many rows changed."""
        a = t.authenticators
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(a).where(a.c.id == authenticator_id, a.c.secret == old).values(secret=new)
            )
        return int(res.rowcount or 0)

    async def accept_totp_step(self, authenticator_id: str, step: int, now: int) -> bool:
        """Record ``step`` as used if it is later than the last accepted one (compare-and-set:
        of two requests with the same code, one wins). False: a replay."""
        a = t.authenticators
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(a)
                .where(a.c.id == authenticator_id, a.c.kind == TOTP, a.c.counter < step)
                .values(counter=step, last_used_at=now)
            )
        return bool(res.rowcount)

    # -- recovery codes -----------------------------------------------------------------------
    async def has_recovery_codes(self, user_id: str) -> bool:
        a = t.authenticators
        q = select(a.c.id).where(
            a.c.user_id == user_id, a.c.kind == RECOVERY_CODE, a.c.last_used_at.is_(None)
        )
        async with self.db.connect() as conn:
            return (await conn.execute(q.limit(1))).first() is not None

    async def replace_recovery_codes(
        self, user_id: str, code_hashes: Sequence[str], now: int
    ) -> bool:
        """Regenerate: the old codes stop working, the new ones are stored (hashes). False:
        the user has no second factor (codes alone are no use)."""
        a = t.authenticators
        async with self.db.begin() as conn:
            has_secondary = (
                await conn.execute(
                    select(a.c.id).where(a.c.user_id == user_id, a.c.kind.in_(SECONDARY))
                )
            ).first()
            if has_secondary is None:
                return False
            await _replace_codes(conn, user_id, code_hashes, now)
        return True

    async def consume_recovery_code(self, user_id: str, code_hash: str, now: int) -> bool:
        """Use a code once: only an unused code of this user is marked used."""
        a = t.authenticators
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(a)
                .where(
                    a.c.user_id == user_id,
                    a.c.kind == RECOVERY_CODE,
                    a.c.secret == code_hash,
                    a.c.last_used_at.is_(None),
                )
                .values(last_used_at=now)
            )
        return bool(res.rowcount)

    # -- passkeys -----------------------------------------------------------------------------
    async def add_passkey(
        self,
        *,
        authenticator_id: str,
        user_id: str,
        label: str,
        credential_id: str,
        public_key: str,
        sign_count: int,
        data: dict[str, Any],
        now: int,
    ) -> bool:
        """False: this credential is registered already (to anyone)."""
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    insert(t.authenticators).values(
                        id=authenticator_id,
                        user_id=user_id,
                        kind=PASSKEY,
                        label=label,
                        secret=None,
                        counter=sign_count,
                        credential_id=credential_id,
                        public_key=public_key,
                        data=data,
                        created_at=now,
                        last_used_at=None,
                    )
                )
                await _recount(conn, user_id)
        except IntegrityError:
            return False
        return True

    async def get_passkey(self, credential_id: str) -> Authenticator | None:
        a = t.authenticators
        q = select(a).where(a.c.credential_id == credential_id, a.c.kind == PASSKEY)
        async with self.db.connect() as conn:
            r = (await conn.execute(q)).mappings().first()
        return _authenticator(r) if r else None

    async def record_passkey_use(
        self, authenticator_id: str, old_count: int, new_count: int, now: int
    ) -> bool:
        """Store the new sign count if nobody used the credential meanwhile (compare-and-set:
        a cloned authenticator racing the real one cannot both pass)."""
        a = t.authenticators
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(a)
                .where(a.c.id == authenticator_id, a.c.counter == old_count)
                .values(counter=new_count, last_used_at=now)
            )
        return bool(res.rowcount)

    # -- removal ------------------------------------------------------------------------------
    async def remove(self, user_id: str, authenticator_id: str, kind: str) -> Authenticator | None:
        """Remove one TOTP authenticator or passkey of this user (with the orphaned recovery
        codes and trusted devices when it was the last second factor)."""
        a = t.authenticators
        async with self.db.begin() as conn:
            row = (
                (
                    await conn.execute(
                        delete(a)
                        .where(a.c.id == authenticator_id, a.c.user_id == user_id, a.c.kind == kind)
                        .returning(*a.c)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            await _drop_orphans(conn, user_id)
            await _recount(conn, user_id)
        return _authenticator(row)

    async def reset_mfa(self, user_id: str) -> MfaReset:
        """An administrator's reset: every TOTP authenticator, recovery code and trusted
        device of the user goes (passkeys stay; they are primary authenticators)."""
        a = t.authenticators
        async with self.db.begin() as conn:
            totp = await conn.execute(delete(a).where(a.c.user_id == user_id, a.c.kind == TOTP))
            codes, devices = await _drop_orphans(conn, user_id)
            await _recount(conn, user_id)
        return MfaReset(int(totp.rowcount or 0), codes, devices)

    # -- trusted devices ----------------------------------------------------------------------
    async def add_device_token(
        self, token_hash: str, user_id: str, now: int, expires_at: int
    ) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                insert(t.mfa_device_tokens).values(
                    token_hash=token_hash, user_id=user_id, created_at=now, expires_at=expires_at
                )
            )

    async def device_token_valid(self, token_hash: str, user_id: str, now: int) -> bool:
        d = t.mfa_device_tokens
        q = select(d.c.token_hash).where(
            d.c.token_hash == token_hash, d.c.user_id == user_id, d.c.expires_at > now
        )
        async with self.db.connect() as conn:
            return (await conn.execute(q)).first() is not None

    async def count_device_tokens(self, user_id: str, now: int) -> int:
        d = t.mfa_device_tokens
        q = select(func.count()).select_from(d).where(d.c.user_id == user_id, d.c.expires_at > now)
        async with self.db.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def forget_devices(self, user_id: str) -> int:
        d = t.mfa_device_tokens
        async with self.db.begin() as conn:
            res = await conn.execute(delete(d).where(d.c.user_id == user_id))
        return int(res.rowcount or 0)


async def _replace_codes(conn: Conn, user_id: str, code_hashes: Sequence[str], now: int) -> None:
    a = t.authenticators
    await conn.execute(delete(a).where(a.c.user_id == user_id, a.c.kind == RECOVERY_CODE))
    if code_hashes:
        await conn.execute(
            insert(a).values(
                [
                    {
                        "id": str(uuid.uuid4()),
                        "user_id": user_id,
                        "kind": RECOVERY_CODE,
                        "label": None,
                        "secret": h,
                        "counter": None,
                        "credential_id": None,
                        "public_key": None,
                        "data": {},
                        "created_at": now,
                        "last_used_at": None,
                    }
                    for h in code_hashes
                ]
            ),
        )
