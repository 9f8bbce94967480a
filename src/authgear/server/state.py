"""Everything a request handler needs, built once per app."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from authgear.server.access_tokens import AccessTokenReader
from authgear.server.config import ServerConfig, Settings
from authgear.server.keys import KeySet
from authgear.server.ratelimit import RateLimiter
from authgear.server.security.sealing import UNSEALED, Sealer
from authgear.server.storage import AdminRepository, Repository

if TYPE_CHECKING:
    from authgear.server.accounts import AccountService
    from authgear.server.mail import MailService
    from authgear.server.sso.client import UpstreamClients
    from authgear.server.storage.authenticators import AuthenticatorStore
    from authgear.server.storage.devices import DeviceCodeStore
    from authgear.server.storage.identities import IdentityStore

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class ServerState:
    settings: Settings
    repo: Repository
    keys: KeySet
    limiter: RateLimiter
    # Derives a rotated refresh token from its predecessor, so a retry gets the same one.
    rotation_key: bytes = field(repr=False, default=b"")
    # Signs the pages' CSRF tokens (security/csrf.py); shared by every process.
    csrf_key: bytes = field(repr=False, default=b"")
    templates: Jinja2Templates = field(
        default_factory=lambda: Jinja2Templates(directory=str(TEMPLATES))
    )
    # Process-local memo of when this process last recorded activity for a session.
    touched: dict[str, int] = field(default_factory=dict)
    # Seals TOTP secrets at rest (security/sealing.py): the key-encryption cipher when the
    # server has one, else stored as given.
    sealer: Sealer = field(default=UNSEALED, repr=False)
    # Keys recovery-code hashes; read from the database on first use (signin/secrets).
    mfa_key: bytes | None = field(default=None, repr=False)
    _token_reader: AccessTokenReader | None = field(default=None, repr=False)

    @property
    def token_reader(self) -> AccessTokenReader:
        """Reads our JWT access tokens back; a new one whenever the key set changes."""
        reader = self._token_reader
        if reader is None or reader.keys is not self.keys:
            reader = self._token_reader = AccessTokenReader(self.keys, self.issuer)
        return reader

    @property
    def config(self) -> ServerConfig:
        return self.settings.config

    @property
    def issuer(self) -> str:
        return self.config.issuer

    def url(self, path: str) -> str:
        return self.issuer + path

    @property
    def admin(self) -> AdminRepository:
        """Session-management storage (admin API, portal), on the repository's database."""
        return self.repo.admin

    @functools.cached_property
    def mail(self) -> MailService:
        """Outgoing mail of this process (SMTP or the outbox), sent off the request path."""
        from authgear.server.mail import MailService

        return MailService(self.settings)

    @functools.cached_property
    def accounts(self) -> AccountService:
        """Verification, password reset and change, change of email (accounts.py)."""
        from authgear.server.accounts import AccountService

        return AccountService(
            config=self.config, repo=self.repo, limiter=self.limiter, mail=self.mail
        )

    async def close_mail(self, grace: float = 10.0) -> None:
        """Send what is queued (bounded), at shutdown; nothing to do if no mail was sent."""
        if "mail" in self.__dict__:
            await self.mail.aclose(grace)

    @property
    def authenticators(self) -> AuthenticatorStore:
        """Second factors and passkeys, on the repository's database."""
        return self.repo.authenticators

    @property
    def device_codes(self) -> DeviceCodeStore:
        """The device authorization grant's codes (RFC 8628), on the repository's database."""
        return self.repo.device_codes

    @property
    def identities(self) -> IdentityStore:
        """Users' accounts at upstream identity providers, on the repository's database."""
        return self.repo.identities

    @functools.cached_property
    def upstream(self) -> UpstreamClients:
        """This process's HTTP client for upstream identity providers, with their discovery
        documents and JWKS cached (sso/client.py)."""
        from authgear.server.sso.client import UpstreamClients

        return UpstreamClients(self.config.identity_providers)

    async def close_upstream(self) -> None:
        if "upstream" in self.__dict__:
            await self.upstream.aclose()


def get_state(request: Request) -> ServerState:
    state: Any = request.app.state.authgear
    assert isinstance(state, ServerState)
    return state
