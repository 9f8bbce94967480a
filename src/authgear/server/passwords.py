"""Argon2id password hashing (OWASP: m=19 MiB, t=2, p=1), always off the event loop, and never
more at once than the process allows.

Each hash or check takes 19 MiB and a core for tens of milliseconds. Without a bound of its own,
concurrency was that of the thread pool (40 by default): 50 wrong passwords sent at once ran 49
checks and took 350 MB that stayed. :class:`HashingGate` admits a fixed number at a time; others
wait in a bounded queue for a bounded time, then get :class:`HashingBusy` (503, Retry-After).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from authgear.server import metrics
from authgear.server.logs import CAUSE_LOGGED

log = logging.getLogger("authgear.server")

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the email is unknown, so both answers take the same time.
_DUMMY_HASH = _hasher.hash("authgear-dummy-password")

MIN_LENGTH = 8
# Authgear's limit (pkg/util/password/constants.go) is 8192 bytes; a password is never longer
# in characters than in bytes, so cutting input at this many characters keeps every valid one.
MAX_BYTES = 8192
MAX_LENGTH = MAX_BYTES
# Requests waiting for a turn, per allowed concurrent hash: past that, refuse at once.
QUEUE_PER_SLOT = 16

T = TypeVar("T")


def log_busy(scope: MutableMapping[str, Any]) -> None:
    """The cause of a 503 for busy hashing, logged once for the request (the HTTP layer then
    adds no ERROR line of its own)."""
    method, path = scope.get("method"), scope.get("path")
    log.warning("password hashing busy: %s %s answered 503", method, path)  # ok-secret
    scope[CAUSE_LOGGED] = True


class HashingBusy(Exception):
    """Every hashing slot stayed busy for the whole wait (or the queue is full): answer 503."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("password hashing is busy")
        self.retry_after = retry_after


def default_concurrency() -> int:
    return (os.cpu_count() or 1) * 2


class HashingGate:
    """At most ``limit`` hashes at once in this process, counted before any work starts;
    at most ``limit * QUEUE_PER_SLOT`` waiting, each for at most ``timeout`` seconds."""

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self.max_waiting = limit * QUEUE_PER_SLOT
        self._slots = anyio.Semaphore(limit)
        # Threads of our own: the shared pool's limit must not decide, nor be used up by us.
        self._threads = anyio.CapacityLimiter(limit)
        self._waiting = 0
        # Measured inside the worker threads, around the argon2 call itself.
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        metrics.HASHING_LIMIT.set(limit)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._waiting >= self.max_waiting:
            self._reject()
        self._waiting += 1
        try:
            with anyio.move_on_after(self.timeout) as scope:
                await self._slots.acquire()
        finally:
            self._waiting -= 1
        if scope.cancelled_caught:
            self._reject()
        try:
            return await anyio.to_thread.run_sync(self._measured, fn, *args, limiter=self._threads)
        finally:
            self._slots.release()

    def _measured(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            metrics.HASHING_PEAK.set(self.peak)
        metrics.HASHING_IN_PROGRESS.inc()
        try:
            return fn(*args)
        finally:
            metrics.HASHING_IN_PROGRESS.dec()
            with self._lock:
                self.running -= 1

    def _reject(self) -> None:
        metrics.HASHING_REJECTED.inc()
        raise HashingBusy(max(1, math.ceil(self.timeout)))


_gate = HashingGate(default_concurrency(), 5.0)


def configure(limit: int | None, timeout: float) -> None:
    """Set this process's bound (``None``: twice the cores); call once at start-up."""
    global _gate
    _gate = HashingGate(limit or default_concurrency(), timeout)


def password_problem(password: str) -> str | None:
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return f"Use at most {MAX_BYTES} bytes."
    return None


def hash_password_sync(password: str) -> str:
    return _hasher.hash(password)


async def hash_password(password: str) -> str:
    """Raises HashingBusy when no slot frees up in time."""
    return await _gate.run(_hasher.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Raises HashingBusy when no slot frees up in time."""
    return await _gate.run(_verify, stored, password)


async def run_bounded(fn: Callable[..., T], *args: object) -> T:
    """Other CPU-heavy password work (zxcvbn's guessability score) under the same bound as
    hashing, off the event loop. Raises HashingBusy when no slot frees up in time."""
    return await _gate.run(fn, *args)
