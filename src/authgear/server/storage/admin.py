"""Storage for session management: users as an administrator sees them, a user's sessions,
admin API keys and the audit log. Built on the same :class:`Database` as the main repository;
portable SQLAlchemy Core (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update

from authgear.server.storage import revocations, rows
from authgear.server.storage import schema as t
from authgear.server.storage.db import Conn, Database
from authgear.server.storage.deletes import PURGE_BATCH, delete_in_batches, end_session
from authgear.server.storage.models import Purged, User

IDP_SESSION = "idp_session"
OFFLINE_GRANT = "offline_grant"
KEY_PREFIX = "agk_"
KEY_USE_INTERVAL = 60


def _secret_hash(secret: str) -> str:
    """An admin API key's secret as stored: its SHA-256 (hex). Keys are made and checked only
    here, so the hash is this module's own."""
    return hashlib.sha256(secret.encode()).hexdigest()


# Compared against when a key id is unknown, so both answers take the same work.
_DUMMY_HASH = _secret_hash("no such key")


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """An IdP session (browser cookie) or an offline grant (an app's refresh token)."""

    id: str
    kind: str
    user_id: str
    client_id: str | None
    idp_session_id: str | None
    scopes: list[str]
    amr: list[str]
    created_at: int
    authenticated_at: int
    last_access_at: int
    last_access_ip: str | None
    last_access_user_agent: str | None
    device_info: dict[str, Any]
    expires_at: int


@dataclass(frozen=True, slots=True)
class AdminKey:
    id: str
    name: str
    created_at: int
    last_used_at: int | None
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an admin action: an API key, a portal admin, the CLI, or a user on their
    own sessions ("self")."""

    type: str
    id: str
    label: str | None = None
    ip: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: int
    actor_type: str
    actor_id: str
    actor_label: str | None
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]
    ip: str | None


class BadCursor(ValueError):
    """A pagination cursor this server did not hand out."""


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> str:
    if len(cursor) > 600:
        raise BadCursor(cursor[:20])
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor(cursor[:20]) from None
    if not value:
        raise BadCursor(cursor[:20])
    return value


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _idp_record(r: Mapping[Any, Any]) -> SessionRecord:
    s = rows.idp_session(r)
    return SessionRecord(
        id=s.id,
        kind=IDP_SESSION,
        user_id=s.user_id,
        client_id=None,
        idp_session_id=None,
        scopes=[],
        amr=s.amr,
        created_at=s.created_at,
        authenticated_at=s.authenticated_at,
        last_access_at=s.last_access_at,
        last_access_ip=s.last_access_ip,
        last_access_user_agent=s.last_access_user_agent,
        device_info={},
        expires_at=s.expires_at,
    )


def _grant_record(r: Mapping[Any, Any]) -> SessionRecord:
    g = rows.grant(r)
    return SessionRecord(
        id=g.id,
        kind=OFFLINE_GRANT,
        user_id=g.user_id,
        client_id=g.client_id,
        idp_session_id=g.idp_session_id,
        scopes=g.scopes,
        amr=g.amr,
        created_at=g.created_at,
        authenticated_at=g.authenticated_at,
        last_access_at=g.last_access_at,
        last_access_ip=g.last_access_ip,
        last_access_user_agent=g.last_access_user_agent,
        device_info=g.device_info,
        expires_at=g.expires_at,
    )


def _key(r: Mapping[Any, Any]) -> AdminKey:
    return AdminKey(
        id=r["id"],
        name=r["name"],
        created_at=r["created_at"],
        last_used_at=r["last_used_at"],
        revoked_at=r["revoked_at"],
    )


def _entry(r: Mapping[Any, Any]) -> AuditEntry:
    return AuditEntry(
        id=int(r["id"]),
        at=r["at"],
        actor_type=r["actor_type"],
        actor_id=r["actor_id"],
        actor_label=r["actor_label"],
        action=r["action"],
        target_type=r["target_type"],
        target_id=r["target_id"],
        details=dict(r["details"] or {}),
        ip=r["ip"],
    )


async def _get_user(conn: Conn, user_id: str) -> User | None:
    r = (await conn.execute(select(t.users).where(t.users.c.id == user_id))).mappings().first()
    return rows.user(r) if r else None


async def _user_session_ids(conn: Conn, user_id: str) -> list[str]:
    ids: list[str] = []
    for table in (t.idp_sessions, t.offline_grants):
        q = select(table.c.id).where(table.c.user_id == user_id)
        ids += [r[0] for r in (await conn.execute(q)).all()]
    return ids


async def _revoke_all(conn: Conn, user_id: str) -> int:
    """Delete every session of a user and everything issued under them (and tell JWT-mode
    backends, through the revocation feed, in the same transaction)."""
    await revocations.record(conn, await _user_session_ids(conn, user_id))
    # Access tokens carry user_id (no foreign key): client_credentials tokens have none.
    await conn.execute(delete(t.access_tokens).where(t.access_tokens.c.user_id == user_id))
    await conn.execute(delete(t.auth_codes).where(t.auth_codes.c.user_id == user_id))
    grants = await conn.execute(
        delete(t.offline_grants).where(t.offline_grants.c.user_id == user_id)
    )
    idps = await conn.execute(delete(t.idp_sessions).where(t.idp_sessions.c.user_id == user_id))
    return int(grants.rowcount or 0) + int(idps.rowcount or 0)


def _recency(s: SessionRecord) -> tuple[int, int, str]:
    return (-s.last_access_at, -s.created_at, s.id)


def _session_position(cursor: str) -> tuple[int, int, str]:
    last, _, rest = decode_cursor(cursor).partition(":")
    created, _, session_id = rest.partition(":")
    if not (last.isdigit() and created.isdigit() and 0 < len(session_id) <= 100):
        raise BadCursor(cursor[:20])
    return int(last), int(created), session_id


def _after_position(table: Any, position: tuple[int, int, str]) -> Any:
    """Rows that come after ``position`` in (last access desc, creation desc, id) order."""
    last, created, session_id = position
    return or_(
        table.c.last_access_at < last,
        and_(
            table.c.last_access_at == last,
            or_(
                table.c.created_at < created,
                and_(table.c.created_at == created, table.c.id > session_id),
            ),
        ),
    )


class AdminRepository:
    """Every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- users --------------------------------------------------------------------------------
    async def list_users(
        self, *, query: str | None = None, limit: int = 50, after: str | None = None
    ) -> tuple[list[User], str | None]:
        """Users ordered by lower-cased email (unique, so the order is stable); ``query``
        matches part of the email or a whole user id. Returns the page and the next cursor."""
        q = select(t.users).order_by(t.users.c.email_key).limit(limit + 1)
        if query:
            q = q.where(
                or_(
                    t.users.c.email_key.like(_like_pattern(query.lower()), escape="\\"),
                    t.users.c.id == query,
                )
            )
        if after is not None:
            q = q.where(t.users.c.email_key > decode_cursor(after))
        async with self.db.connect() as conn:
            found = (await conn.execute(q)).mappings().all()
        users = [rows.user(r) for r in found[:limit]]
        more = len(found) > limit
        return users, encode_cursor(users[-1].email.lower()) if more and users else None

    async def count_users(self) -> int:
        async with self.db.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(t.users))).scalar_one())

    async def get_user(self, user_id: str) -> User | None:
        async with self.db.connect() as conn:
            return await _get_user(conn, user_id)

    async def set_disabled(self, user_id: str, disabled: bool, now: int) -> User | None:
        """A disabled user's sessions stay (re-enabling brings them back) but stop working at
        once: userinfo and the resolver check the flag, and JWT-mode backends learn it from
        the revocation feed, which refuses the tokens issued up to now."""
        async with self.db.begin() as conn:
            if disabled:
                await revocations.record(conn, await _user_session_ids(conn, user_id), now)
            await conn.execute(
                update(t.users)
                .where(t.users.c.id == user_id)
                .values(disabled=disabled, updated_at=now)
            )
            return await _get_user(conn, user_id)

    async def set_roles(self, user_id: str, roles: Sequence[str], now: int) -> User | None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(t.users)
                .where(t.users.c.id == user_id)
                .values(roles=list(roles), updated_at=now)
            )
            return await _get_user(conn, user_id)

    async def delete_user(self, user_id: str) -> bool:
        """The user, their sessions, grants, codes and access-token records, at once."""
        async with self.db.begin() as conn:
            await _revoke_all(conn, user_id)
            res = await conn.execute(delete(t.users).where(t.users.c.id == user_id))
        return bool(res.rowcount)

    # -- sessions -----------------------------------------------------------------------------
    async def list_sessions(self, user_id: str, now: int) -> list[SessionRecord]:
        """All of a user's live IdP sessions and offline grants, most recently used first
        (at most ``session.max_per_user`` of them)."""
        records, _ = await self.session_page(user_id, now, limit=None)
        return records

    async def session_page(
        self, user_id: str, now: int, *, limit: int | None, after: str | None = None
    ) -> tuple[list[SessionRecord], str | None]:
        """A page of a user's live sessions, most recently used first, and the cursor of the
        next page. Ordered by (last access desc, creation desc, id): each of the two tables
        gives its first ``limit + 1`` rows past the cursor, and the page is the merge's first
        ``limit``. Raises BadCursor."""
        position = _session_position(after) if after is not None else None
        records: list[SessionRecord] = []
        async with self.db.connect() as conn:
            for table, make in ((t.idp_sessions, _idp_record), (t.offline_grants, _grant_record)):
                q = select(table).where(table.c.user_id == user_id, table.c.expires_at > now)
                if position is not None:
                    q = q.where(_after_position(table, position))
                q = q.order_by(table.c.last_access_at.desc(), table.c.created_at.desc(), table.c.id)
                if limit is not None:
                    q = q.limit(limit + 1)
                records += [make(r) for r in (await conn.execute(q)).mappings().all()]
        records.sort(key=_recency)
        if limit is None or len(records) <= limit:
            return records, None
        page = records[:limit]
        last = page[-1]
        return page, encode_cursor(f"{last.last_access_at}:{last.created_at}:{last.id}")

    async def end_least_recent_sessions(
        self, user_id: str, keep: int, now: int, *, newest: str
    ) -> list[SessionRecord]:
        """End the user's live sessions past the ``keep`` most recently used, each through
        the same path as a revocation; ``newest`` (the session just created) always stays.
        Returns what ended.

        Two sign-ins of one user at once must not both keep one too many: the transaction
        first writes the user's row, which orders the two (a row lock on PostgreSQL, the
        database's write lock on SQLite); each runs after its own session was committed."""
        counts = [
            select(func.count())
            .select_from(table)
            .where(table.c.user_id == user_id, table.c.expires_at > now)
            for table in (t.idp_sessions, t.offline_grants)
        ]
        async with self.db.connect() as conn:
            live = sum([int((await conn.execute(q)).scalar_one()) for q in counts])
        if live <= keep:
            return []
        async with self.db.begin() as conn:
            await conn.execute(
                update(t.users)
                .where(t.users.c.id == user_id)
                .values(updated_at=t.users.c.updated_at)
            )
            records: list[SessionRecord] = []
            for table, make in ((t.idp_sessions, _idp_record), (t.offline_grants, _grant_record)):
                q = select(table).where(table.c.user_id == user_id, table.c.expires_at > now)
                records += [make(r) for r in (await conn.execute(q)).mappings().all()]
            records.sort(key=lambda r: (r.id != newest, *_recency(r)))
            ended = records[keep:]
            for record in ended:
                await end_session(conn, record.id)
        return ended

    async def get_session(self, session_id: str) -> SessionRecord | None:
        async with self.db.connect() as conn:
            return await self._find_session(conn, session_id)

    async def _find_session(self, conn: Conn, session_id: str) -> SessionRecord | None:
        r = (
            (await conn.execute(select(t.idp_sessions).where(t.idp_sessions.c.id == session_id)))
            .mappings()
            .first()
        )
        if r is not None:
            return _idp_record(r)
        r = (
            (
                await conn.execute(
                    select(t.offline_grants).where(t.offline_grants.c.id == session_id)
                )
            )
            .mappings()
            .first()
        )
        return _grant_record(r) if r is not None else None

    async def revoke_session(
        self, session_id: str, *, user_id: str | None = None
    ) -> SessionRecord | None:
        """End one session through the one storage operation every way of ending a session
        uses (:func:`authgear.server.storage.deletes.end_session`). With ``user_id``, only a
        session of that user. Returns what was revoked, or None."""
        async with self.db.begin() as conn:
            ended = await end_session(conn, session_id, user_id=user_id)
        if ended is None:
            return None
        return _idp_record(ended.row) if ended.kind == "idp" else _grant_record(ended.row)

    async def revoke_all_sessions(self, user_id: str) -> int:
        async with self.db.begin() as conn:
            return await _revoke_all(conn, user_id)

    # -- admin API keys -----------------------------------------------------------------------
    async def create_key(self, name: str, now: int) -> tuple[AdminKey, str]:
        """A new key and its secret form ``agk_<id>.<secret>``, shown once: only the SHA-256
        of the secret is stored."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        async with self.db.begin() as conn:
            await conn.execute(
                insert(t.admin_api_keys).values(
                    id=key_id,
                    name=name,
                    secret_hash=_secret_hash(secret),
                    created_at=now,
                    last_used_at=None,
                    revoked_at=None,
                )
            )
        return AdminKey(key_id, name, now, None, None), f"{KEY_PREFIX}{key_id}.{secret}"

    async def list_keys(self) -> list[AdminKey]:
        async with self.db.connect() as conn:
            q = select(t.admin_api_keys).order_by(
                t.admin_api_keys.c.created_at, t.admin_api_keys.c.id
            )
            return [_key(r) for r in (await conn.execute(q)).mappings().all()]

    async def revoke_key(self, key_id: str, now: int) -> AdminKey | None:
        async with self.db.begin() as conn:
            await conn.execute(
                update(t.admin_api_keys)
                .where(t.admin_api_keys.c.id == key_id, t.admin_api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            q = select(t.admin_api_keys).where(t.admin_api_keys.c.id == key_id)
            r = (await conn.execute(q)).mappings().first()
        return _key(r) if r else None

    async def verify_key(self, presented: str, now: int) -> AdminKey | None:
        """The live key whose secret this is; the hashes are compared in constant time."""
        if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
            return None
        key_id, sep, secret = presented[len(KEY_PREFIX) :].partition(".")
        if not sep or not key_id or not secret:
            return None
        async with self.db.connect() as conn:
            q = select(t.admin_api_keys).where(t.admin_api_keys.c.id == key_id)
            r = (await conn.execute(q)).mappings().first()
        stored = r["secret_hash"] if r is not None else _DUMMY_HASH
        matches = hmac.compare_digest(stored, _secret_hash(secret))
        if r is None or not matches or r["revoked_at"] is not None:
            return None
        key = _key(r)
        if key.last_used_at is None or now - key.last_used_at >= KEY_USE_INTERVAL:
            async with self.db.begin() as conn:
                await conn.execute(
                    update(t.admin_api_keys)
                    .where(t.admin_api_keys.c.id == key_id)
                    .values(last_used_at=now)
                )
        return key

    # -- audit log ----------------------------------------------------------------------------
    async def audit(
        self,
        actor: Actor,
        action: str,
        now: int,
        *,
        target_type: str | None = None,
        target_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                insert(t.audit_log).values(
                    at=now,
                    actor_type=actor.type,
                    actor_id=actor.id[:200],
                    actor_label=actor.label[:320] if actor.label else None,
                    action=action,
                    target_type=target_type,
                    target_id=target_id[:200] if target_id else None,
                    details=dict(details or {}),
                    ip=actor.ip[:64] if actor.ip else None,
                )
            )

    async def purge_audit(self, before: int, purged: Purged) -> None:
        """Retention: delete entries older than ``before``, in batches."""
        await delete_in_batches(
            self.db, t.audit_log.c.id, t.audit_log.c.at < before, PURGE_BATCH, purged
        )

    async def list_audit(
        self,
        *,
        limit: int = 50,
        before: int | None = None,
        target_id: str | None = None,
        actor_id: str | None = None,
        action: str | None = None,
    ) -> tuple[list[AuditEntry], int | None]:
        """Newest first; the cursor is the id of the last entry returned."""
        q = select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit + 1)
        if before is not None:
            q = q.where(t.audit_log.c.id < before)
        if target_id:
            q = q.where(t.audit_log.c.target_id == target_id)
        if actor_id:
            q = q.where(t.audit_log.c.actor_id == actor_id)
        if action:
            q = q.where(t.audit_log.c.action == action)
        async with self.db.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        entries = [_entry(r) for r in rows[:limit]]
        return entries, entries[-1].id if len(rows) > limit and entries else None
