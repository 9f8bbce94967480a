"""Fixed-window rate limits, in this process's memory.

One process (the SQLite default) is exact; with several processes each counts its own share, so
a shared backend (Redis) is the way to exact limits there.
"""

from __future__ import annotations

import time


class RateLimiter:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}
        self._last_sweep = time.monotonic()

    def hit(self, bucket: str, key: str | None, limit: int, window: float) -> bool:
        """Count one event; False when this one is over the limit."""
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

    def check(self, bucket: str, key: str | None, limit: int, window: float) -> bool:
        """Whether the next event would be allowed, without counting it."""
        if not self.enabled or key is None:
            return True
        now = time.monotonic()
        start, count = self._windows.get((bucket, key), (now, 0))
        return now - start >= window or count < limit

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        # Windows are at most an hour long.
        self._windows = {k: v for k, v in self._windows.items() if now - v[0] < 3600}
