"""Fixed-window rate limits: in memory (one process), in the database, or in Redis.

One process on SQLite counts in memory. Once several processes serve (``--workers``, or a
shared PostgreSQL), counts must be shared: in Redis when configured, else in the database
(storage/ratelimit.py, which the repository hands out).

When Redis is away, the limits are counted in the database instead (never a 500, never
unlimited): see :class:`RedisRateLimiter`. Every refusal is counted in the metrics
(:class:`CountedRefusals`).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any, Protocol

from authgear.server import metrics
from authgear.server.storage import Purged
from authgear.server.storage.ratelimit import window_key


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


log = logging.getLogger("authgear.ratelimit")


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

    async def purge(self, now: int, purged: Purged) -> None:
        """Forget windows that have ended (run by the maintenance task), counting what went."""
        ...

    async def status(self) -> dict[str, str]:
        """The limiter's own dependencies for /readyz, e.g. ``{"redis": "ok"}``."""
        ...

    async def close(self) -> None: ...


class CountedRefusals:
    """A limiter whose refusals are counted in the metrics, whichever limiter decided them
    (memory, Redis, or the database while Redis is away): one place counts them all."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.enabled = limiter.enabled

    async def hit(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        return _counted(bucket, await self.limiter.hit(bucket, key, limit, window))

    async def check(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        return _counted(bucket, await self.limiter.check(bucket, key, limit, window))

    async def refund(self, bucket: str, key: str | None, window: int) -> None:
        await self.limiter.refund(bucket, key, window)

    async def purge(self, now: int, purged: Purged) -> None:
        await self.limiter.purge(now, purged)

    async def status(self) -> dict[str, str]:
        return await self.limiter.status()

    async def close(self) -> None:
        await self.limiter.close()


def _counted(bucket: str, ok: bool) -> bool:
    if not ok:
        metrics.RATE_LIMITED.labels(bucket).inc()
    return ok


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

    async def purge(self, now: int, purged: Purged) -> None:
        self._sweep(time.monotonic())

    async def status(self) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        return None

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


# DECR only a live counter above zero: a window that rolled over is not pushed below zero.
_REDIS_REFUND = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


class RedisRateLimiter:
    """INCR on a key per window, expiring with it: atomic across every process.

    Redis away (stopped, restarting, unreachable): the event is counted by ``fallback`` (the
    database limiter) instead, and Redis is left alone for ``RETRY_AFTER`` seconds so a dead
    host does not cost every request a connect timeout. A pooled connection that died with the
    old Redis is retried once on a fresh one, so its return costs no request either.
    """

    RETRY_AFTER = 5.0

    def __init__(self, url: str, fallback: RateLimiter, enabled: bool = True) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.enabled = enabled
        self.fallback = fallback
        self.redis: Any = redis.asyncio.Redis.from_url(
            url,
            socket_connect_timeout=1,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        self._down_until = 0.0
        self._down_since: float | None = None

    def _use_redis(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, e: Exception) -> None:
        metrics.REDIS_ERRORS.inc()
        self._down_until = time.monotonic() + self.RETRY_AFTER
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "redis unavailable (%s): rate limits are counted in the database until it is back",
                type(e).__name__,
            )

    def _worked(self) -> None:
        if self._down_since is not None:
            log.warning(
                "redis is back after %.0f s: rate limits are counted in redis again",
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    async def hit(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        if not self.enabled or key is None:
            return True
        if self._use_redis():
            name, _ = window_key(bucket, key, window, int(time.time()))
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.incr(name)
                    pipe.expire(name, window, nx=True)
                    count, _ = await pipe.execute()
            except _redis_errors() as e:
                self._failed(e)
            else:
                self._worked()
                return int(count) <= limit
        return await self.fallback.hit(bucket, key, limit, window)

    async def check(self, bucket: str, key: str | None, limit: int, window: int) -> bool:
        if not self.enabled or key is None:
            return True
        if self._use_redis():
            name, _ = window_key(bucket, key, window, int(time.time()))
            try:
                count = await self.redis.get(name)
            except _redis_errors() as e:
                self._failed(e)
            else:
                self._worked()
                return count is None or int(count) < limit
        return await self.fallback.check(bucket, key, limit, window)

    async def purge(self, now: int, purged: Purged) -> None:
        await self.fallback.purge(now, purged)

    async def status(self) -> dict[str, str]:
        try:
            await self.redis.ping()
        except _redis_errors() as e:
            self._failed(e)
            return {"redis": "unavailable: rate limits counted in the database"}
        self._worked()
        self._down_until = 0.0
        return {"redis": "ok"}

    async def refund(self, bucket: str, key: str | None, window: int) -> None:
        if not self.enabled or key is None:
            return
        if self._use_redis():
            name, _ = window_key(bucket, key, window, int(time.time()))
            try:
                await self.redis.eval(_REDIS_REFUND, 1, name)
            except _redis_errors() as e:
                self._failed(e)
            else:
                self._worked()
                return
        await self.fallback.refund(bucket, key, window)

    async def close(self) -> None:
        await self.redis.aclose()


def _redis_errors() -> tuple[type[Exception], ...]:
    import redis.exceptions

    return (redis.exceptions.RedisError, OSError, TimeoutError)
