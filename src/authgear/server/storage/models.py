"""Plain records passed between the endpoints and the repository, and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class EmailTaken(Exception):
    """A user with this email already exists."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    password_hash: str | None = field(repr=False)
    email_verified: bool
    roles: list[str]
    standard_attributes: dict[str, Any]
    custom_attributes: dict[str, Any]
    disabled: bool
    created_at: int
    updated_at: int
    last_login_at: int | None
    # TOTP authenticators and passkeys (recovery codes do not count).
    authenticator_count: int = 0

    @property
    def can_reauthenticate(self) -> bool:
        """Authgear's claim: the user has at least one authenticator (password, TOTP or
        passkey), so a fresh sign-in is possible (accounts spec §1.8)."""
        return self.password_hash is not None or self.authenticator_count > 0


@dataclass(frozen=True, slots=True)
class IdpSession:
    id: str
    user_id: str
    secret_hash: str = field(repr=False)
    created_at: int
    authenticated_at: int
    amr: list[str]
    last_access_at: int
    last_access_ip: str | None
    last_access_user_agent: str | None
    expires_at: int


@dataclass(frozen=True, slots=True)
class PreviousHash:
    hash: str
    superseded_at: int


@dataclass(frozen=True, slots=True)
class OfflineGrant:
    id: str
    user_id: str
    client_id: str
    idp_session_id: str | None
    scopes: list[str]
    refresh_hash: str = field(repr=False)
    previous_hashes: list[PreviousHash] = field(repr=False)
    created_at: int
    authenticated_at: int
    amr: list[str]
    last_access_at: int
    last_access_ip: str | None
    last_access_user_agent: str | None
    device_info: dict[str, Any]
    expires_at: int


@dataclass(frozen=True, slots=True)
class AccessTokenRecord:
    token_hash: str = field(repr=False)
    jti: str
    session_kind: str
    session_id: str
    user_id: str | None
    client_id: str
    scope: str
    auth_time: int | None
    amr: list[str]
    issued_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class AuthCode:
    code_hash: str = field(repr=False)
    client_id: str
    user_id: str
    idp_session_id: str
    redirect_uri: str
    scopes: list[str]
    nonce: str | None
    code_challenge: str | None
    auth_time: int
    amr: list[str]
    created_at: int
    expires_at: int
    used_at: int | None
    issued_grant_id: str | None
    issued_token_hash: str | None = field(repr=False)
    acr: str | None = None
    reauth_grant_id: str | None = None


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_pem: str = field(repr=False)
    created_at: int
    active: bool
    retire_at: int | None
    activate_at: int | None = None


@dataclass(frozen=True, slots=True)
class LoginFailure:
    key: str
    count: int
    first_at: int
    locked_until: int | None


@dataclass(slots=True)
class Purged:
    """What a purge deleted: rows per table, and how many batches (transactions) it took."""

    rows: dict[str, int] = field(default_factory=dict)
    batches: int = 0

    def add(self, table: str, count: int) -> None:
        self.batches += 1
        self.rows[table] = self.rows.get(table, 0) + count


@dataclass(frozen=True, slots=True)
class TokenSession:
    """What a user's access token stands on, read in one query: its user, the session it names
    (``kind`` "offline" for an app's grant, "idp" for a browser session, None when that session
    is gone), the session's expiry, and whether the token itself was revoked."""

    user: User
    kind: str | None
    expires_at: int
    revoked: bool


@dataclass(frozen=True, slots=True)
class EndedSession:
    """What ending a session deleted: ``kind`` "idp" (browser) or "offline" (app), and the
    session's row as it was (column name to value)."""

    kind: str
    row: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Authenticator:
    """A TOTP authenticator, a recovery code or a passkey (storage/schema.py authenticators)."""

    id: str
    user_id: str
    kind: str
    label: str | None
    secret: str | None = field(repr=False)
    counter: int | None
    credential_id: str | None
    public_key: str | None = field(repr=False)
    data: dict[str, Any]
    created_at: int
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class FlowRow:
    """A stored sign-in flow: its data, revision (for compare-and-set) and browser binding."""

    data: dict[str, Any]
    rev: int
    binding: str | None = field(repr=False)


class AttemptPolicy(Protocol):
    """Decides a sign-in attempt's new failure count (security/lockout.py's LockoutPolicy);
    the repository applies it atomically."""

    def reserve(self, current: LoginFailure | None, key: str, now: int) -> LoginFailure | None:
        """The count after one more attempt, or None when the attempt must not run."""
        ...
