"""Account lockout after failed passwords, counted *before* the password is checked.

Each sign-in attempt first reserves a place in the account's failure count, atomically in the
database (security/lockout.reserve runs inside one locked transaction). The attempt that reaches
``max_attempts`` sets the lock at once, so concurrent guesses cannot all slip in while the first
ones are still in argon2; a correct password clears the count. Without this, 16 parallel wrong
passwords were all checked and the right one still signed in (issue 9).
"""

from __future__ import annotations

from dataclasses import dataclass

from authgear.server.storage.models import LoginFailure

# 2**30 minimum durations is far past any maximum_duration.
_MAX_DOUBLINGS = 30


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_attempts: int
    history_duration: int
    minimum_duration: int
    maximum_duration: int


def reserve(
    current: LoginFailure | None, key: str, now: int, policy: LockoutPolicy
) -> LoginFailure | None:
    """The count after one more attempt, or None when the account is locked now (the attempt
    must not run). Every reserved attempt counts as a failure until it succeeds."""
    if current is not None and current.locked_until is not None and current.locked_until > now:
        return None
    if current is None or current.count == 0 or now - current.first_at > policy.history_duration:
        current = LoginFailure(key=key, count=0, first_at=now, locked_until=None)
    count = current.count + 1
    locked_until = current.locked_until
    if count >= policy.max_attempts:
        doublings = min(count - policy.max_attempts, _MAX_DOUBLINGS)
        locked_until = now + min(policy.minimum_duration * 2**doublings, policy.maximum_duration)
    return LoginFailure(key=key, count=count, first_at=current.first_at, locked_until=locked_until)
