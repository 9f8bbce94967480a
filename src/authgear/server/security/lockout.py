"""Account lockout after failed passwords, counted *before* the password is checked.

Each sign-in attempt first reserves a place in the account's failure count, atomically in the
database (:meth:`LockoutPolicy.reserve` runs inside one locked transaction). The attempt that
reaches ``max_attempts`` sets the lock at once, so concurrent guesses cannot all slip in while
the first ones are still in argon2; a correct password clears the count. Without this, 16
parallel wrong passwords were all checked and the right one still signed in.
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

    def reserve(self, current: LoginFailure | None, key: str, now: int) -> LoginFailure | None:
        """The count after one more attempt, or None when the account is locked now (the
        attempt must not run). Every reserved attempt counts as a failure until it succeeds.

        The repository calls this inside the transaction that holds the count's row
        (:meth:`Repository.reserve_login_attempt`)."""
        if current is not None and current.locked_until is not None and current.locked_until > now:
            return None
        if current is None or current.count == 0 or now - current.first_at > self.history_duration:
            current = LoginFailure(key=key, count=0, first_at=now, locked_until=None)
        count = current.count + 1
        locked_until = current.locked_until
        if count >= self.max_attempts:
            doublings = min(count - self.max_attempts, _MAX_DOUBLINGS)
            locked_until = now + min(self.minimum_duration * 2**doublings, self.maximum_duration)
        return LoginFailure(
            key=key, count=count, first_at=current.first_at, locked_until=locked_until
        )
