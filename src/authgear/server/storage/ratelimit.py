"""Rate-limit counts in the database: one row per key, its current window and its count.

The limiter the server uses when several processes share a database and no Redis is configured,
and Redis's fallback while Redis is away. It meets the server's ``RateLimiter`` protocol
(server/ratelimit.py), which also counts its refusals in the metrics.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.dialects import postgresql, sqlite

from authgear.server.storage import schema as t
from authgear.server.storage.db import Database
from authgear.server.storage.deletes import PURGE_BATCH, delete_in_batches
from authgear.server.storage.models import Purged


def window_key(bucket: str, key: str, window: int, now: int) -> tuple[str, int]:
    start = now - now % window
    return f"rl:{bucket}:{window}:{key}"[:255], start


class SQLRateLimiter:
    """One row per key; an upsert resets it when its window has passed."""

    def __init__(self, db: Database, enabled: bool = True) -> None:
        self.enabled = enabled
        self.db = db
        self.insert: Any = postgresql.insert if db.dialect == "postgresql" else sqlite.insert

    async def hit(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        if not self.enabled or key is None:
            return True
        name, start = window_key(bucket, key, window, int(time.time()))
        table = t.rate_limits
        stmt = self.insert(table).values(key=name, window_start=start, count=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "count": case((table.c.window_start == start, table.c.count + 1), else_=1),
                "window_start": start,
            },
        ).returning(table.c.count)
        async with self.db.begin() as conn:
            count = (await conn.execute(stmt)).scalar_one()
        return int(count) <= limit

    async def check(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        if not self.enabled or key is None:
            return True
        name, start = window_key(bucket, key, window, int(time.time()))
        table = t.rate_limits
        q = select(table.c.count).where(table.c.key == name, table.c.window_start == start)
        async with self.db.connect() as conn:
            count = (await conn.execute(q)).scalar_one_or_none()
        return count is None or int(count) < limit

    async def refund(self, bucket: str, key: str | None, window: int) -> None:
        if not self.enabled or key is None:
            return
        name, start = window_key(bucket, key, window, int(time.time()))
        table = t.rate_limits
        async with self.db.begin() as conn:
            await conn.execute(
                update(table)
                .where(table.c.key == name, table.c.window_start == start, table.c.count > 0)
                .values(count=table.c.count - 1)
            )

    async def purge(self, now: int, purged: Purged) -> None:
        # Windows are at most an hour long.
        table = t.rate_limits
        await delete_in_batches(
            self.db, table.c.key, table.c.window_start < now - 3600, PURGE_BATCH, purged
        )

    async def status(self) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        return None
