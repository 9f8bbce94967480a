"""How rows go, for every repository of this package: a session's end (one way, whoever ends
it) and purges in small batches."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from authgear.server.storage import revocations
from authgear.server.storage import schema as t
from authgear.server.storage.db import Conn, Database
from authgear.server.storage.models import EndedSession, Purged

# Rows per purge transaction: small enough that each batch is a blip for other requests.
PURGE_BATCH = 500


async def delete_in_batches(
    db: Database,
    key: Any,
    condition: Any,
    batch_size: int,
    purged: Purged,
    *,
    dependent: Any = None,
) -> None:
    """Delete the rows of ``key``'s table matching ``condition``, ``batch_size`` at a time, each
    batch its own transaction, yielding to the event loop between batches. ``dependent``: a
    column of another table whose rows referring to a deleted key go in the same transaction
    (a grant's access tokens)."""
    table = key.table
    while True:
        async with db.begin() as conn:
            picked = select(key).where(condition).limit(batch_size)
            if dependent is None:
                res = await conn.execute(delete(table).where(key.in_(picked)))
                count = int(res.rowcount or 0)
            else:
                ids = [r[0] for r in (await conn.execute(picked)).all()]
                if ids:
                    await conn.execute(delete(dependent.table).where(dependent.in_(ids)))
                    await conn.execute(delete(table).where(key.in_(ids)))
                count = len(ids)
        purged.add(table.name, count)
        if count < batch_size:
            return
        # Let waiting requests run before the next batch.
        await asyncio.sleep(0)


async def end_session(
    conn: Conn, session_id: str, *, user_id: str | None = None
) -> EndedSession | None:
    """THE way a session ends, whoever ends it: sign-out (/logout), /oauth2/end_session,
    /settings/sessions, the admin API, the portal, the CLI, RFC 7009 revocation and refresh
    token reuse detection all come here, inside their transaction.

    Deleted, in this order: the session's row (with ``user_id``, only a session of that user);
    for a browser (IdP) session, its authorization codes not yet exchanged, so a code issued
    before sign-out cannot be exchanged after it (exchanged ones stay for replay detection);
    then every access token issued under the session; and the session is appended to the
    revocation feed (storage/revocations.py). Offline grants created from a browser
    session are the apps' own sessions and live on (Authgear's model); end them by their id.
    Codes are deleted before tokens: a concurrent code exchange writes its code's row first,
    so either it fails on the missing code or its token is committed before ours deletes it.
    """
    for kind, table in (("idp", t.idp_sessions), ("offline", t.offline_grants)):
        q = delete(table).where(table.c.id == session_id)
        if user_id is not None:
            q = q.where(table.c.user_id == user_id)
        row = (await conn.execute(q.returning(*table.c))).mappings().first()
        if row is None:
            continue
        if kind == "idp":
            await conn.execute(
                delete(t.auth_codes).where(
                    t.auth_codes.c.idp_session_id == session_id,
                    t.auth_codes.c.issued_token_hash.is_(None),
                )
            )
        await conn.execute(
            delete(t.access_tokens).where(t.access_tokens.c.session_id == session_id)
        )
        # JWT-mode backends learn of it from the feed; same transaction, so never one
        # without the other.
        await revocations.record(conn, [session_id])
        return EndedSession(kind, dict(row))
    return None


async def revoke_token(conn: Conn, dialect: str, token_hash: str, expires_at: int) -> None:
    """Refuse one JWT access token (by the SHA-256 of the token) until it expires; again is a
    no-op (the first row's expiry is the token's own)."""
    dialect_insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # ON CONFLICT DO NOTHING: two concurrent revocations of one token both succeed.
    await conn.execute(
        dialect_insert(t.revoked_tokens)
        .values(token_hash=token_hash, expires_at=expires_at)
        .on_conflict_do_nothing()
    )
