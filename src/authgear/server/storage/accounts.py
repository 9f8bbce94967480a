"""Storage for account recovery and verification: emailed codes, password changes with their
history, verified and changed emails. Same :class:`Database` as the main repository; each
method is one short transaction, and every limit it enforces is decided inside it (a row written
first, so concurrent requests are ordered: PostgreSQL's row lock, SQLite's write lock).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from authgear.server.storage import schema as t
from authgear.server.storage.db import Conn, Database
from authgear.server.storage.deletes import PURGE_BATCH, delete_in_batches, end_session
from authgear.server.storage.models import EmailTaken, Purged, User
from authgear.server.storage.rows import user as user_record

DAY = 86400
# What an emailed code is for (the ``purpose`` column); security/codes.py keys its hashes by it.
PURPOSE_VERIFY = "verify_email"
PURPOSE_RESET = "reset_password"
PURPOSE_CHANGE_EMAIL = "change_email"


@dataclass(frozen=True, slots=True)
class EmailCode:
    purpose: str
    subject: str
    user_id: str | None
    target: str
    code_hash: str = field(repr=False)
    link_hash: str | None = field(repr=False)
    created_at: int
    expires_at: int
    failed_attempts: int


@dataclass(frozen=True, slots=True)
class CodeRef:
    """Which code a change spends: by (purpose, subject, code hash) or by link hash."""

    purpose: str
    subject: str | None = None
    code_hash: str | None = field(default=None, repr=False)
    link_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class PasswordSet:
    user: User
    ended_sessions: int


def _code(r: Mapping[Any, Any]) -> EmailCode:
    return EmailCode(**{name: r[name] for name in EmailCode.__dataclass_fields__})


def _ref_condition(ref: CodeRef, now: int) -> Any:
    table = t.email_codes
    conditions = [table.c.purpose == ref.purpose, table.c.expires_at > now]
    if ref.link_hash is not None:
        conditions.append(table.c.link_hash == ref.link_hash)
    elif ref.subject is not None and ref.code_hash is not None:
        conditions += [table.c.subject == ref.subject, table.c.code_hash == ref.code_hash]
    else:
        raise ValueError("a CodeRef names a link, or a subject and a code")
    return and_(*conditions)


async def _end_user_sessions(conn: Conn, user_id: str, keep: str | None) -> int:
    """End each of the user's sessions but ``keep``, through THE way a session ends."""
    ids: list[str] = []
    for table in (t.idp_sessions, t.offline_grants):
        q = select(table.c.id).where(table.c.user_id == user_id)
        ids += [r[0] for r in (await conn.execute(q)).all()]
    ended = 0
    for session_id in ids:
        if session_id != keep and await end_session(conn, session_id, user_id=user_id):
            ended += 1
    return ended


class AccountRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert: Any = postgresql.insert if db.dialect == "postgresql" else sqlite.insert

    # -- codes --------------------------------------------------------------------------------
    async def issue_code(self, code: EmailCode, *, cooldown: int | None) -> bool:
        """Store ``code`` in place of the subject's previous one, unless that one was issued
        less than ``cooldown`` seconds ago (False). One statement: an upsert whose update
        only happens past the cooldown, so concurrent requests cannot both send."""
        table = t.email_codes
        values = {
            "purpose": code.purpose,
            "subject": code.subject,
            "user_id": code.user_id,
            "target": code.target,
            "code_hash": code.code_hash,
            "link_hash": code.link_hash,
            "created_at": code.created_at,
            "expires_at": code.expires_at,
            "failed_attempts": 0,
        }
        stmt = self._insert(table).values(**values)
        update_values = {k: v for k, v in values.items() if k not in ("purpose", "subject")}
        past_cooldown = (
            table.c.created_at <= code.created_at - cooldown if cooldown is not None else None
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.purpose, table.c.subject],
            set_=update_values,
            where=past_cooldown,
        ).returning(table.c.created_at)
        async with self.db.begin() as conn:
            row = (await conn.execute(stmt)).first()
        return row is not None

    async def check_code(
        self, purpose: str, subject: str, code_hash: str, now: int, *, max_failed: int
    ) -> EmailCode | None:
        """The live code of (purpose, subject) if ``code_hash`` is its hash. The try is counted
        before the comparison (the row is updated first, which also orders concurrent tries)
        and given back when right; at ``max_failed`` wrong tries the code is deleted."""
        table = t.email_codes
        where = and_(
            table.c.purpose == purpose, table.c.subject == subject, table.c.expires_at > now
        )
        async with self.db.begin() as conn:
            row = (
                (
                    await conn.execute(
                        update(table)
                        .where(where)
                        .values(failed_attempts=table.c.failed_attempts + 1)
                        .returning(*table.c)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            if hmac.compare_digest(row["code_hash"].encode(), code_hash.encode()):
                await conn.execute(
                    update(table).where(where).values(failed_attempts=row["failed_attempts"] - 1)
                )
                return _code({**row, "failed_attempts": row["failed_attempts"] - 1})
            if row["failed_attempts"] >= max_failed:
                await conn.execute(delete(table).where(where))
        return None

    async def find_link(self, purpose: str, link_hash: str, now: int) -> EmailCode | None:
        """The live code whose link token has this hash (160 bits: nothing to count)."""
        table = t.email_codes
        q = select(table).where(
            table.c.purpose == purpose, table.c.link_hash == link_hash, table.c.expires_at > now
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(q)).mappings().first()
        return _code(row) if row else None

    async def take_code(self, ref: CodeRef, now: int) -> EmailCode | None:
        """Spend a code: delete it if it is still live and matches, returning it. Whoever
        deletes it first wins; a replay or a concurrent second use gets None."""
        table = t.email_codes
        async with self.db.begin() as conn:
            row = (
                (
                    await conn.execute(
                        delete(table).where(_ref_condition(ref, now)).returning(*table.c)
                    )
                )
                .mappings()
                .first()
            )
        return _code(row) if row else None

    async def pending_target(self, purpose: str, subject: str, now: int) -> str | None:
        table = t.email_codes
        q = select(table.c.target).where(
            table.c.purpose == purpose, table.c.subject == subject, table.c.expires_at > now
        )
        async with self.db.connect() as conn:
            found = (await conn.execute(q)).scalar_one_or_none()
        return str(found) if found is not None else None

    async def delete_codes(self, purpose: str, subject: str) -> None:
        table = t.email_codes
        async with self.db.begin() as conn:
            await conn.execute(
                delete(table).where(table.c.purpose == purpose, table.c.subject == subject)
            )

    # -- verification -------------------------------------------------------------------------
    async def verify_with_code(self, ref: CodeRef, now: int) -> User | None:
        """Spend a verification code and mark its address verified, in one transaction, if the
        user's address is still the one the code was sent to."""
        table = t.email_codes
        async with self.db.begin() as conn:
            row = (
                (
                    await conn.execute(
                        delete(table).where(_ref_condition(ref, now)).returning(*table.c)
                    )
                )
                .mappings()
                .first()
            )
            if row is None or row["user_id"] is None:
                return None
            return await _mark_verified(conn, row["user_id"], row["target"], now)

    async def mark_verified(self, user_id: str, now: int, verified: bool = True) -> User | None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(t.users)
                .where(t.users.c.id == user_id)
                .values(email_verified=verified, updated_at=now)
            )
            return await _get_user(conn, user_id)

    async def change_email(self, ref: CodeRef, now: int) -> tuple[User, str] | None:
        """Spend a change-of-email code and move the user to its address (verified by the
        code), in one transaction; returns the user and the old address. Raises EmailTaken
        when the address was taken meanwhile (the code stays spent)."""
        table = t.email_codes
        async with self.db.begin() as conn:
            row = (
                (
                    await conn.execute(
                        delete(table).where(_ref_condition(ref, now)).returning(*table.c)
                    )
                )
                .mappings()
                .first()
            )
            if row is None or row["user_id"] is None:
                return None
            before = await _get_user(conn, row["user_id"])
            if before is None:
                return None
        new = row["target"]
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    update(t.users)
                    .where(t.users.c.id == before.id, t.users.c.email_key == before.email.lower())
                    .values(email=new, email_key=new.lower(), email_verified=True, updated_at=now)
                )
                # Codes sent to the old address (a reset) or for it (verification) are void.
                await conn.execute(
                    delete(table).where(
                        or_(
                            and_(
                                table.c.purpose == PURPOSE_RESET,
                                table.c.subject == before.email.lower(),
                            ),
                            table.c.user_id == before.id,
                        )
                    )
                )
                user = await _get_user(conn, before.id)
        except IntegrityError:
            raise EmailTaken(new) from None
        if user is None or user.email.lower() != new.lower():
            return None
        return user, before.email

    # -- passwords ----------------------------------------------------------------------------
    async def password_history(self, user_id: str, *, size: int, days: int, now: int) -> list[str]:
        """Hashes a new password must not match: the current one, then previous ones that are
        among the last ``size`` passwords (the current one counted) or within ``days``."""
        h = t.password_history
        async with self.db.connect() as conn:
            current = (
                await conn.execute(select(t.users.c.password_hash).where(t.users.c.id == user_id))
            ).scalar_one_or_none()
            q = (
                select(h.c.password_hash, h.c.created_at)
                .where(h.c.user_id == user_id)
                .order_by(h.c.created_at.desc(), h.c.id.desc())
                .limit(64)
            )
            rows = (await conn.execute(q)).mappings().all()
        out = [current] if current else []
        for i, row in enumerate(rows):
            # Position i + 2, counting the current password as the first.
            if i + 2 <= size or (days and row["created_at"] >= now - days * DAY):
                out.append(str(row["password_hash"]))
        return out

    async def set_password(
        self,
        user_id: str,
        password_hash: str,
        now: int,
        *,
        history: tuple[int, int] | None = None,
        end_sessions: bool = False,
        keep_session: str | None = None,
        spend: CodeRef | None = None,
    ) -> PasswordSet | None:
        """Replace the user's password, in one transaction: spend ``spend`` first (None when
        it is gone: used, expired, or used concurrently), keep the old hash for the
        ``history`` (size, days), end every session but ``keep_session`` when asked (each
        through :func:`end_session`), and void emailed reset codes."""
        users = t.users
        async with self.db.begin() as conn:
            if spend is not None:
                res = await conn.execute(
                    delete(t.email_codes)
                    .where(_ref_condition(spend, now))
                    .returning(t.email_codes.c.user_id)
                )
                spent = res.first()
                if spent is None or spent[0] != user_id:
                    return None
            before = await _get_user(conn, user_id)
            if before is None:
                return None
            await conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(password_hash=password_hash, updated_at=now)
            )
            if history is not None and before.password_hash:
                await _push_history(conn, user_id, before.password_hash, now, *history)
            await conn.execute(
                delete(t.email_codes).where(
                    t.email_codes.c.purpose == PURPOSE_RESET,
                    t.email_codes.c.subject == before.email.lower(),
                )
            )
            ended = await _end_user_sessions(conn, user_id, keep_session) if end_sessions else 0
            user = await _get_user(conn, user_id)
        assert user is not None
        return PasswordSet(user, ended)

    # -- housekeeping -------------------------------------------------------------------------
    async def purge(self, now: int, purged: Purged) -> None:
        table = t.email_codes
        await delete_in_batches(
            self.db, table.c.subject, table.c.expires_at < now, PURGE_BATCH, purged
        )


async def _get_user(conn: Conn, user_id: str) -> User | None:
    r = (await conn.execute(select(t.users).where(t.users.c.id == user_id))).mappings().first()
    return user_record(r) if r else None


async def _mark_verified(conn: Conn, user_id: str, address: str, now: int) -> User | None:
    res = await conn.execute(
        update(t.users)
        .where(t.users.c.id == user_id, t.users.c.email_key == address.lower())
        .values(email_verified=True, updated_at=now)
    )
    if not res.rowcount:
        return None
    return await _get_user(conn, user_id)


async def _push_history(
    conn: Conn, user_id: str, old_hash: str, now: int, size: int, days: int
) -> None:
    """Keep the replaced hash; drop rows that count for neither the size nor the days."""
    h = t.password_history
    await conn.execute(insert(h).values(user_id=user_id, password_hash=old_hash, created_at=now))
    rows = (
        (
            await conn.execute(
                select(h.c.id, h.c.created_at)
                .where(h.c.user_id == user_id)
                .order_by(h.c.created_at.desc(), h.c.id.desc())
            )
        )
        .mappings()
        .all()
    )
    stale = [
        row["id"]
        for i, row in enumerate(rows)
        if i + 2 > size and not (days and row["created_at"] >= now - days * DAY)
    ]
    if stale:
        await conn.execute(delete(h).where(h.c.id.in_(stale)))
