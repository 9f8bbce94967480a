"""Storage of the revocation feed (table ``revoked_sessions``): every ended session is a row,
written by :func:`authgear.server.storage.sql.end_session` (and the other ways sessions stop
counting: revoke-all, user deleted or disabled) in the transaction that ends it, and read by
JWT-mode backends with a cursor (``GET /_resolver/revocations``).

The cursor is the row's ``seq``. On PostgreSQL two transactions can commit out of ``seq``
order (the later number first), so a reader that moved its cursor past a hole could miss the
earlier row when it commits. The feed therefore returns every row past the cursor, but moves
the cursor only up to the first hole younger than :data:`GAP_GRACE` seconds: rows after a
young hole come again on the next poll (the reader keeps a set, so repeats are harmless), and
a hole that stays (a rolled-back transaction, purged rows) is passed once it is old. SQLite
has one writer at a time, so its numbers commit in order and it never waits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select

from authgear.server.storage import schema as t
from authgear.server.storage.db import Conn, Database

#: A hole in the numbers younger than this may still be filled by a transaction in flight.
GAP_GRACE = 10
#: Rows per page at most, whatever the reader asks for.
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Revocation:
    seq: int
    session_id: str
    revoked_at: int


@dataclass(frozen=True, slots=True)
class RevocationPage:
    items: list[Revocation]
    #: Where the next poll starts (``after``): never past a hole that may still be filled.
    next_cursor: int
    #: More rows past this page: read again at once.
    has_more: bool


async def record(conn: Conn, session_ids: Sequence[str], now: int | None = None) -> None:
    """Append ended sessions to the feed, inside the caller's transaction."""
    if not session_ids:
        return
    at = int(time.time()) if now is None else now
    rows = [{"session_id": s, "revoked_at": at} for s in session_ids]
    await conn.execute(insert(t.revoked_sessions).values(rows))


def next_cursor(after: int, rows: Sequence[Revocation], now: int, grace: int = GAP_GRACE) -> int:
    """The cursor after reading ``rows`` (in ``seq`` order, all past ``after``): the last
    ``seq`` reached without crossing a hole next to a row younger than ``grace`` seconds."""
    cursor = after
    for row in rows:
        if row.seq != cursor + 1 and row.revoked_at > now - grace:
            return cursor
        cursor = row.seq
    return cursor


async def page(db: Database, after: int, limit: int, now: int) -> RevocationPage:
    limit = max(1, min(limit, MAX_PAGE))
    table = t.revoked_sessions
    q = (
        select(table.c.seq, table.c.session_id, table.c.revoked_at)
        .where(table.c.seq > after)
        .order_by(table.c.seq)
        .limit(limit + 1)
    )
    async with db.connect() as conn:
        result = (await conn.execute(q)).mappings().all()
    rows = [Revocation(r["seq"], r["session_id"], r["revoked_at"]) for r in result]
    items = rows[:limit]
    cursor = next_cursor(after, items, now)
    # A held cursor (a young hole) is no reason to read again at once: the reader would spin.
    return RevocationPage(items, cursor, len(rows) > limit and cursor > after)
