"""Storage behind a small interface: endpoints call a :class:`Repository`, never SQL.

:func:`open_repository` is the way in. What it returns also hands out the session-management
store (``admin``: admin API, portal, CLI), the stores of account recovery (``accounts``), second
factors (``authenticators``), the device grant (``device_codes``) and upstream identities
(``identities``), and the database rate limiter, all on the same database; nothing outside this
package sees the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from authgear.server.storage.accounts import AccountRepository
from authgear.server.storage.admin import AdminRepository
from authgear.server.storage.authenticators import AuthenticatorStore
from authgear.server.storage.db import PoolStats
from authgear.server.storage.devices import DeviceCodeStore
from authgear.server.storage.identities import IdentityStore
from authgear.server.storage.models import (
    AccessTokenRecord,
    AttemptPolicy,
    AuthCode,
    Authenticator,
    EmailTaken,
    EndedSession,
    FlowRow,
    IdpSession,
    LoginFailure,
    OfflineGrant,
    PreviousHash,
    Purged,
    SigningKey,
    TokenSession,
    User,
)
from authgear.server.storage.ratelimit import SQLRateLimiter
from authgear.server.storage.revocations import Revocation, RevocationPage
from authgear.server.storage.sql import SQLRepository


class Repository(Protocol):
    # Users as an administrator sees them, sessions, admin keys and the audit log.
    admin: AdminRepository
    # Emailed codes, password changes and their history, changes of email (account recovery).
    accounts: AccountRepository
    # Second factors: TOTP, recovery codes, passkeys.
    authenticators: AuthenticatorStore
    # The device authorization grant's codes (RFC 8628).
    device_codes: DeviceCodeStore
    # Users' accounts at upstream identity providers.
    identities: IdentityStore

    async def close(self) -> None: ...
    def pool_stats(self) -> PoolStats: ...
    def rate_limiter(self, enabled: bool) -> SQLRateLimiter: ...

    async def create_user(
        self,
        *,
        user_id: str,
        email: str,
        password_hash: str | None,
        now: int,
        email_verified: bool = False,
        roles: Sequence[str] = (),
    ) -> User: ...
    async def get_user(self, user_id: str) -> User | None: ...
    async def get_user_by_email(self, email: str) -> User | None: ...
    async def set_last_login(self, user_id: str, now: int) -> None: ...

    async def reserve_login_attempt(self, key: str, now: int, policy: AttemptPolicy) -> bool: ...
    async def clear_login_failures(self, key: str) -> None: ...

    async def create_idp_session(self, s: IdpSession) -> None: ...
    async def get_idp_session(self, session_id: str) -> IdpSession | None: ...
    async def touch_session(
        self,
        kind: str,
        session_id: str,
        *,
        now: int,
        ip: str | None,
        user_agent: str | None,
        lifetime: int,
        idle_timeout: int | None,
        min_interval: int = 0,
    ) -> None: ...
    async def reauthenticate_session(
        self, session_id: str, user_id: str, now: int, amr: list[str]
    ) -> bool: ...
    async def end_session(
        self, session_id: str, *, user_id: str | None = None
    ) -> EndedSession | None: ...

    async def create_grant(self, g: OfflineGrant) -> None: ...
    async def get_grant(self, grant_id: str) -> OfflineGrant | None: ...
    async def get_grant_and_user(self, grant_id: str) -> tuple[OfflineGrant, User] | None: ...
    async def refresh_grant(
        self,
        grant_id: str,
        *,
        expected_refresh_hash: str,
        refresh_hash: str,
        previous_hashes: Sequence[PreviousHash],
        now: int,
        ip: str | None,
        user_agent: str | None,
        expires_at: int,
    ) -> bool: ...

    async def add_access_token(self, a: AccessTokenRecord) -> None: ...
    async def get_access_token(
        self, token_hash: str
    ) -> tuple[AccessTokenRecord, User | None] | None: ...

    async def delete_access_token(self, token_hash: str) -> None: ...
    async def get_token_session(
        self, session_id: str, user_id: str, client_id: str, token_hash: str
    ) -> TokenSession | None: ...
    async def is_token_revoked(self, token_hash: str) -> bool: ...
    async def revoke_token(self, token_hash: str, expires_at: int) -> None: ...

    async def add_code(self, c: AuthCode) -> None: ...
    async def get_code(self, code_hash: str) -> AuthCode | None: ...
    async def claim_code(self, code_hash: str, now: int) -> bool: ...
    async def exchange_code(
        self,
        code_hash: str,
        grant: OfflineGrant | None,
        token_hash: str,
        token: AccessTokenRecord | None,
        *,
        reauth: tuple[str, str, str, int] | None = None,
    ) -> bool: ...
    async def revoke_code_issue(self, code_hash: str, until: int) -> None: ...

    async def add_flow(
        self,
        flow_id: str,
        data: dict[str, Any],
        now: int,
        expires_at: int,
        *,
        ip_key: str | None = None,
        max_live: int | None = None,
        binding: str | None = None,
    ) -> bool: ...
    async def get_flow(self, flow_id: str, now: int) -> dict[str, Any] | None: ...
    async def delete_flow(self, flow_id: str) -> None: ...
    async def get_flow_row(self, flow_id: str, now: int) -> FlowRow | None: ...
    async def update_flow(self, flow_id: str, rev: int, data: dict[str, Any]) -> bool: ...
    async def take_flow(self, flow_id: str, rev: int) -> bool: ...

    async def list_signing_keys(self) -> list[SigningKey]: ...
    async def add_signing_key(self, key: SigningKey) -> None: ...
    async def rotate_signing_keys(self, new: SigningKey, retire_at: int) -> None: ...
    async def delete_retired_keys(self, now: int) -> None: ...
    async def replace_signing_key_pem(self, kid: str, old: str, new: str) -> bool: ...
    async def ping(self) -> None: ...

    async def get_or_create_secret(self, name: str, value: str, now: int) -> str: ...
    async def replace_secret(self, name: str, old: str, new: str) -> bool: ...

    async def purge_expired(
        self, now: int, *, failures_before: int, batch_size: int = ...
    ) -> Purged: ...

    async def revocations_after(self, after: int, limit: int, now: int) -> RevocationPage: ...
    async def purge_revocations(
        self, before: int, purged: Purged, *, batch_size: int = ...
    ) -> None: ...


def open_repository(
    url: str, *, pool_size: int = 10, max_overflow: int | None = None
) -> Repository:
    """The repository on the database at ``url`` (SQLite or PostgreSQL). ``pool_size``,
    ``max_overflow``: a server database's connections. Returning the SQL repository as a
    :class:`Repository` is where mypy checks that it implements the whole protocol."""
    return SQLRepository.open(url, pool_size=pool_size, max_overflow=max_overflow)


__all__ = [
    "AccessTokenRecord",
    "AdminRepository",
    "AttemptPolicy",
    "AuthCode",
    "Authenticator",
    "EmailTaken",
    "EndedSession",
    "FlowRow",
    "IdpSession",
    "LoginFailure",
    "OfflineGrant",
    "PoolStats",
    "PreviousHash",
    "Purged",
    "Repository",
    "Revocation",
    "RevocationPage",
    "SigningKey",
    "TokenSession",
    "User",
    "open_repository",
]
