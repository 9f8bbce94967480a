"""Fixed-window rate limits: in memory (one process), in the database, or in Redis.

One process on SQLite counts in memory. Once several processes serve (``--workers``, or a
shared PostgreSQL), counts must be shared: in Redis when configured, else in the database.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Protocol

from sqlalchemy import case, select, update
from sqlalchemy.dialects import postgresql, sqlite

from authgear.server.storage import schema as t
from authgear.server.storage.db import Database
from authgear.server.storage.models import Purged
from authgear.server.storage.sql import PURGE_BATCH, delete_in_batches


def ip_bucket(ip: str | None) -> str | None:
    """What a per-IP limit counts: an IPv4 address, or an IPv6 /64. One subscriber gets a whole
    /64 and can rotate through its addresses at will, so counting addresses would count nothing.
    """
    if ip is None:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class RateLimiter(Protocol):
    enabled: bool

    async def hit(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        """Count one event; False when this one is over the limit."""
        ...

    async def check(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        """Whether the next event would be allowed, without counting it."""
        ...

    async def refund(self, bucket: str, key: str | None, window: int) -> None:
        """Give back one event counted by hit() in the current window (a reservation taken
        before an expensive check that turned out not to count, e.g. a correct password)."""
        ...


class MemoryRateLimiter:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}
        self._last_sweep = time.monotonic()

    async def hit(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        if not self.enabled or key is None:
            return True
        now = time.monotonic()
        self._sweep(now)
        start, count = self._windows.get((bucket, key), (now, 0))
        if now - start >= window:
            start, count = now, 0
        count += 1
        self._windows[(bucket, key)] = (start, count)
        return count <= limit

    async def check(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        if not self.enabled or key is None:
            return True
        now = time.monotonic()
        start, count = self._windows.get((bucket, key), (now, 0))
        return now - start >= window or count < limit

    async def refund(self, bucket: str, key: str | None, window: int) -> None:
        if not self.enabled or key is None:
            return
        found = self._windows.get((bucket, key))
        if found is not None and found[1] > 0 and time.monotonic() - found[0] < window:
            self._windows[(bucket, key)] = (found[0], found[1] - 1)

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        # Windows are at most an hour long.
        self._windows = {k: v for k, v in self._windows.items() if now - v[0] < 3600}


def _window_key(bucket: str, key: str, window: int, now: int) -> tuple[str, int]:
    start = now - now % window
    return f"rl:{bucket}:{window}:{key}"[:255], start


# DECR only a live counter above zero: a window that rolled over is not pushed below zero.
_REDIS_REFUND = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


class RedisRateLimiter:
    """INCR on a key per window, expiring with it: atomic across every process."""

    def __init__(self, url: str, enabled: bool = True) -> None:
        import redis.asyncio

        self.enabled = enabled
        self.redis: Any = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=2
        )

    async def hit(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        if not self.enabled or key is None:
            return True
        name, _ = _window_key(bucket, key, window, int(time.time()))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, window, nx=True)
            count, _ = await pipe.execute()
        return int(count) <= limit

    async def check(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        if not self.enabled or key is None:
            return True
        name, _ = _window_key(bucket, key, window, int(time.time()))
        count = await self.redis.get(name)
        return count is None or int(count) < limit

    async def refund(self, bucket: str, key: str | None, window: int) -> None:
        if not self.enabled or key is None:
            return
        name, _ = _window_key(bucket, key, window, int(time.time()))
        await self.redis.eval(_REDIS_REFUND, 1, name)

    async def close(self) -> None:
        await self.redis.aclose()


class SQLRateLimiter:
    """One row per key; an upsert resets it when its window has passed."""

    def __init__(self, db: Database, dialect: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.db = db
        self.insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert

    async def hit(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        if not self.enabled or key is None:
            return True
        name, start = _window_key(bucket, key, window, int(time.time()))
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
        name, start = _window_key(bucket, key, window, int(time.time()))
        table = t.rate_limits
        q = select(table.c.count).where(table.c.key == name, table.c.window_start == start)
        async with self.db.connect() as conn:
            count = (await conn.execute(q)).scalar_one_or_none()
        return count is None or int(count) < limit

    async def refund(self, bucket: str, key: str | None, window: int) -> None:
        if not self.enabled or key is None:
            return
        name, start = _window_key(bucket, key, window, int(time.time()))
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
