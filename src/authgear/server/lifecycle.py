"""A server process's life: start-up (migrations, keys, limiter), maintenance while it runs,
and the draining state of a graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import anyio.to_thread

from authgear.server import housekeeping, metrics, passwords
from authgear.server.config import Settings
from authgear.server.keys import (
    CSRF_KEY,
    MFA_KEY,
    ROTATION_KEY,
    KeyCipher,
    load_or_create_keys,
    load_server_secret,
    reencrypt,
    reload_keys,
)
from authgear.server.ratelimit import (
    CountedRefusals,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from authgear.server.sessions import now_s
from authgear.server.state import ServerState
from authgear.server.storage import Repository, migrate, open_repository

log = logging.getLogger("authgear.server")
SAMPLE_INTERVAL = 5


@dataclass
class Drain:
    """Set when the process was told to stop: /readyz answers 503 and responses close their
    connections, while requests are still served until the listeners close."""

    draining: bool = False
    since: float | None = None

    def start(self) -> None:
        if not self.draining:
            self.draining = True
            self.since = time.monotonic()
            metrics.DRAINING.set(1)


# One per process: the signal handler and the request handlers of a process share it.
DRAIN = Drain()


def open_server_repository(settings: Settings) -> Repository:
    config = settings.config
    return open_repository(
        settings.database_url,
        pool_size=config.database_pool_size,
        max_overflow=config.database_max_overflow,
    )


async def build_state(settings: Settings, *, migrate_first: bool = True) -> ServerState:
    """Everything the handlers share. Raises the database driver's errors, or
    KeyEncryptionError when stored keys cannot be read with the configured KEKs."""
    hashing = settings.config.password_hashing
    passwords.configure(hashing.max_concurrent, hashing.queue_timeout)
    if migrate_first:
        await anyio.to_thread.run_sync(migrate.upgrade, settings.database_url)
    repo = open_server_repository(settings)
    try:
        cipher = KeyCipher.from_config(settings.config)
        if cipher.current is not None or settings.config.old_key_encryption_keys:
            changed = await reencrypt(repo, cipher)
            if changed:
                log.warning("re-encrypted %d stored keys under the current KEK", changed)
        keys = await load_or_create_keys(repo, cipher)
        rotation_key = await load_server_secret(repo, ROTATION_KEY, cipher)
        csrf_key = await load_server_secret(repo, CSRF_KEY, cipher)
        mfa_key = await load_server_secret(repo, MFA_KEY, cipher)
    except BaseException:
        await repo.close()
        raise
    return ServerState(
        settings=settings,
        repo=repo,
        keys=keys,
        limiter=make_limiter(settings, repo),
        rotation_key=rotation_key,
        csrf_key=csrf_key,
        mfa_key=mfa_key,
        # TOTP secrets are sealed with the same key-encryption key as the signing keys.
        sealer=cipher,
    )


def make_limiter(settings: Settings, repo: Repository) -> RateLimiter:
    """Memory for one process on SQLite; shared (Redis, else the database) otherwise. Redis
    falls back to the database while it is away."""
    config = settings.config
    enabled = config.rate_limits.enabled
    limiter: RateLimiter
    if config.redis_url:
        limiter = RedisRateLimiter(config.redis_url, repo.rate_limiter(enabled), enabled)
    elif config.workers > 1 or not settings.is_sqlite:
        limiter = repo.rate_limiter(enabled)
    else:
        limiter = MemoryRateLimiter(enabled)
    return CountedRefusals(limiter)


async def close_state(state: ServerState) -> None:
    # Queued mail goes out first (bounded): a reset link must not die with the process.
    await state.close_mail()
    await state.close_upstream()
    await state.limiter.close()
    await state.repo.close()


async def maintain_forever(state: ServerState) -> None:
    """Re-read signing keys every key_refresh_interval; purge expired rows every
    purge_interval (10 minutes by default)."""
    interval = state.config.key_refresh_interval
    last_purge = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        try:
            state.keys = await reload_keys(state.repo, state.keys)
            if time.monotonic() - last_purge >= state.config.purge_interval:
                last_purge = time.monotonic()
                await housekeeping.purge(state, now_s())
        except Exception as e:
            log.warning("maintenance failed: %s", type(e).__name__)


async def sample_forever(state: ServerState) -> None:
    """Keep the gauges (pool, process) current for whichever worker answers /metrics."""
    while True:
        try:
            metrics.sample(pool=state.repo.pool_stats())
        except Exception as e:
            log.warning("metrics sampling failed: %s", type(e).__name__)
        await asyncio.sleep(SAMPLE_INTERVAL)
