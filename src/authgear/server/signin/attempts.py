"""One set of limits for every guessable secret: passwords, TOTP codes and recovery codes.

Each attempt is counted *before* its check, atomically: once in the per-IP bucket (the
``password_failures_per_ip_per_minute`` rate limit) and once in the account's lockout counter
(security/lockout.py), which every method shares, as in Authgear (accounts spec §6.3). A correct
answer gives both back (Authgear reserves and refunds the same way), so only failures count, and
a flood of concurrent guesses cannot all be checked before the lock falls.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from authgear.server import events
from authgear.server.http import client_ip
from authgear.server.security.lockout import LockoutPolicy
from authgear.server.sessions import now_s
from authgear.server.state import ServerState

BUCKET = "password"
WINDOW = 60


@dataclass(frozen=True, slots=True)
class Reservation:
    ip: str | None
    lock_key: str


@dataclass(frozen=True, slots=True)
class Refused:
    message: str


def account_key(email: str) -> str:
    """The lockout counter of an account, by lower-cased email (existing or not, so a lockout
    reveals nothing about which emails have accounts)."""
    return f"email:{email.strip().lower()[:320]}"


def policy(state: ServerState) -> LockoutPolicy:
    cfg = state.config.lockout
    return LockoutPolicy(
        max_attempts=cfg.max_attempts,
        history_duration=cfg.history_duration,
        minimum_duration=cfg.minimum_duration,
        maximum_duration=cfg.maximum_duration,
    )


async def reserve(state: ServerState, request: Request, lock_key: str) -> Reservation | Refused:
    ip = client_ip(request, state.config.trusted_proxies)
    limit = state.config.rate_limits.password_failures_per_ip_per_minute
    if not await state.limiter.hit(BUCKET, ip, limit, WINDOW):
        return Refused("Too many attempts. Wait a minute and try again.")
    if state.config.lockout.enabled and not await state.repo.reserve_login_attempt(
        lock_key, now_s(), policy(state)
    ):
        # Locked: nothing is checked, so this is no failure from this address.
        await state.limiter.refund(BUCKET, ip, WINDOW)
        events.locked_out(request)
        return Refused("Too many attempts. Wait a while and try again.")
    return Reservation(ip, lock_key)


async def succeeded(state: ServerState, reservation: Reservation) -> None:
    """The answer was right: the reserved attempt is given back, the account's failures end."""
    await state.limiter.refund(BUCKET, reservation.ip, WINDOW)
    if state.config.lockout.enabled:
        await state.repo.clear_login_failures(reservation.lock_key)
