"""Server configuration: a YAML file in the data folder, overridable by environment variables.

Environment variables are ``AUTHGEAR_<KEY>`` for top-level keys and ``AUTHGEAR_<KEY>__<SUBKEY>`` for
nested ones, e.g. ``AUTHGEAR_PUBLIC_ORIGIN`` or ``AUTHGEAR_RATE_LIMITS__ENABLED=false``. Only
names of settings are read; other ``AUTHGEAR_*`` variables (the SDK's ``AUTHGEAR_ENDPOINT``, a
typo) are ignored and listed in :attr:`Settings.ignored_env`.

Secret settings can come from a file instead (``database_url_file: /run/secrets/db``, or
``AUTHGEAR_DATABASE_URL_FILE``), the container convention: see :data:`SECRET_SETTINGS`.
An error names where the bad value came from: the config file, a variable, or a secret file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from authgear.server.security.redirect_uris import check_registered
from authgear.server.sso.config import IdentityProviderConfig, check_unique, env_name

CONFIG_FILE = "authgear.yaml"
ENV_PREFIX = "AUTHGEAR_"

# Authgear's defaults (seconds).
DEFAULT_ACCESS_TOKEN_LIFETIME = 1800
DEFAULT_REFRESH_TOKEN_LIFETIME = 31449600  # 52 weeks
DEFAULT_REFRESH_TOKEN_IDLE_TIMEOUT = 2592000  # 30 days


# Settings that may hold a secret: each can be read from a file named by ``<name>_file``.
SECRET_SETTINGS = (
    "database_url",
    "redis_url",
    "key_encryption_key",
    "metrics_token",
    "smtp_url",
)
CLIENT_SECRET_SETTINGS = ("client_secret_hash",)
# identity_providers[].client_secret: also AUTHGEAR_IDENTITY_PROVIDERS__<ALIAS>__CLIENT_SECRET
# (or ..._FILE), by alias, since the list has no other name for its entries.
IDP_SECRET_SETTINGS = ("client_secret",)
IDP_ENV_PREFIX = "AUTHGEAR_IDENTITY_PROVIDERS__"
# A list of secrets, each from a file: the key-encryption keys being rotated out.
SECRET_FILE_LISTS = {"old_key_encryption_key_files": "old_key_encryption_keys"}
# AUTHGEAR_* variables that are not server settings: the CLI's and the SDK's own.
NOT_SETTINGS = frozenset(
    {
        "AUTHGEAR_DATA_DIR",
        "AUTHGEAR_CONFIG",
        "AUTHGEAR_ENDPOINT",
        "AUTHGEAR_CLIENT_ID",
        "AUTHGEAR_TOKEN_DIR",
    }
)


class ConfigError(Exception):
    """The configuration cannot be used; the message is one readable line."""


def kek_bytes(value: str) -> bytes:
    """A key-encryption key as given (base64, base64url or hex of 32 bytes) as its bytes."""
    text = value.strip()
    candidates = []
    if len(text) == 64:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(text))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            continue
    for raw in candidates:
        if len(raw) == 32:
            return raw
    raise ValueError("must be 32 random bytes in base64 or hex (make one: `authgear keys new-kek`)")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# RFC 8628 §3.4: the device authorization grant's grant_type (a client opts in by listing it).
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GrantType = Literal[
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:device_code",
]
DEFAULT_GRANT_TYPES: tuple[GrantType, ...] = ("authorization_code", "refresh_token")
# Scopes that describe a user or a user's session: never in a client-credentials token.
USER_SCOPES = frozenset({"openid", "offline_access", "profile", "email", "phone", "address"})
AUTHGEAR_SCOPE_PREFIX = "https://authgear.com/scopes/"
# RFC 6749 §3.3 scope-token: printable ASCII except space, " and \.
_SCOPE_TOKEN_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}


def is_user_scope(scope: str) -> bool:
    return scope in USER_SCOPES or scope.startswith(AUTHGEAR_SCOPE_PREFIX)


class ClientConfig(_Model):
    id: str = Field(min_length=1, max_length=200)
    name: str = ""
    type: Literal["public", "confidential"] = "public"
    # "sha256:<hex>" of the client secret; only for confidential clients.
    client_secret_hash: str | None = None
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    access_token_lifetime: int = Field(default=DEFAULT_ACCESS_TOKEN_LIFETIME, ge=300)
    refresh_token_lifetime: int = Field(default=DEFAULT_REFRESH_TOKEN_LIFETIME, ge=300)
    refresh_token_idle_timeout: int = Field(default=DEFAULT_REFRESH_TOKEN_IDLE_TIMEOUT, ge=300)
    refresh_token_idle_timeout_enabled: bool = True
    # Default: on for public clients (RFC 9700 §4.14.2), off for confidential ones.
    refresh_token_rotation: bool = False
    # How long a just-rotated refresh token stays usable for the client's own concurrent retry.
    refresh_token_rotation_grace_period: int = Field(default=10, ge=0, le=300)
    access_token_format: Literal["jwt", "opaque"] = "jwt"
    # PKCE (RFC 7636) on every code flow. Only a confidential client may turn it off (legacy).
    pkce_required: bool = True
    grant_types: tuple[GrantType, ...] = DEFAULT_GRANT_TYPES
    # The scopes a client_credentials token may carry (never openid, offline_access or
    # Authgear's user scopes: such a token acts for the client, not for a user).
    allowed_scopes: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("refresh_token_rotation") is None:
            data = {**data, "refresh_token_rotation": data.get("type", "public") == "public"}
        return data

    @field_validator("client_secret_hash")
    @classmethod
    def _check_hash(cls, v: str | None) -> str | None:
        if v is None:
            return v
        algo, _, digest = v.partition(":")
        if algo != "sha256" or len(digest) != 64:
            raise ValueError("must be 'sha256:<64 hex digits>' (see `authgear hash-secret`)")
        try:
            bytes.fromhex(digest)
        except ValueError as e:
            raise ValueError("must be 'sha256:<64 hex digits>'") from e
        return v

    @field_validator("redirect_uris", "post_logout_redirect_uris")
    @classmethod
    def _check_uris(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # The rules of security/redirect_uris.py: what a request may ask for, exactly.
        return tuple(check_registered(uri) for uri in v)

    @field_validator("allowed_scopes")
    @classmethod
    def _check_scopes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for scope in v:
            if not scope or not set(scope) <= _SCOPE_TOKEN_CHARS:
                raise ValueError(f"{scope[:80]!r} is not a scope token (RFC 6749 §3.3)")
            if is_user_scope(scope):
                raise ValueError(
                    f"{scope!r} is a user scope; a client_credentials token cannot carry it"
                )
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for origin in v:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ValueError(f"{origin!r} must be an origin like https://app.example.com")
        return v

    @model_validator(mode="after")
    def _check_type(self) -> ClientConfig:
        if self.type == "confidential" and not self.client_secret_hash:
            raise ValueError("a confidential client needs client_secret_hash")
        if self.type == "public" and self.client_secret_hash:
            raise ValueError("a public client has no client_secret_hash")
        if self.type == "public" and not self.pkce_required:
            raise ValueError("a public client always needs PKCE (pkce_required: true)")
        if self.type == "public" and "client_credentials" in self.grant_types:
            raise ValueError("client_credentials is only for confidential clients")
        if len(set(self.grant_types)) != len(self.grant_types):
            raise ValueError("grant_types lists a grant twice")
        if self.allowed_scopes and "client_credentials" not in self.grant_types:
            raise ValueError("allowed_scopes needs client_credentials in grant_types")
        return self

    def allows(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    @property
    def is_public(self) -> bool:
        return self.type == "public"

    def check_secret(self, secret: str) -> bool:
        if not self.client_secret_hash:
            return False
        expected = self.client_secret_hash.partition(":")[2]
        actual = hashlib.sha256(secret.encode()).hexdigest()
        return hmac.compare_digest(expected, actual)


class SessionConfig(_Model):
    cookie_name: str = "session"
    lifetime: int = Field(default=DEFAULT_REFRESH_TOKEN_LIFETIME, ge=60)
    idle_timeout: int = Field(default=DEFAULT_REFRESH_TOKEN_IDLE_TIMEOUT, ge=60)
    idle_timeout_enabled: bool = True
    # Live sessions per user, browser sessions and app grants together; a new one past this
    # ends the least recently used.
    max_per_user: int = Field(default=100, ge=1, le=10_000)


class PasswordHashingConfig(_Model):
    # Argon2 hashes or checks at once per server process (each takes 19 MiB and a core for
    # tens of milliseconds). None: twice the number of cores.
    max_concurrent: int | None = Field(default=None, ge=1, le=256)
    # Seconds a password check waits for a free slot before answering 503 with Retry-After.
    queue_timeout: float = Field(default=5.0, gt=0, le=60)


class RateLimitConfig(_Model):
    enabled: bool = True
    # Requests per minute to the token endpoint from one IP address.
    token_per_ip_per_minute: int = Field(default=600, ge=1)
    # Requests per minute to the token endpoint for one user (all their grants together).
    token_per_user_per_minute: int = Field(default=120, ge=1)
    # Failed password checks per minute from one IP address.
    password_failures_per_ip_per_minute: int = Field(default=30, ge=1)
    # Authorize and login/signup page requests per minute from one IP.
    authorize_per_ip_per_minute: int = Field(default=600, ge=1)
    signup_per_ip_per_hour: int = Field(default=60, ge=1)
    # Unfinished sign-ins (login flows, kept an hour) from one IPv4 address or IPv6 /64.
    login_flows_per_ip: int = Field(default=300, ge=1)
    # Emailed codes (verification, password reset, change of email): at most one per address
    # per cooldown (Authgear's trigger_cooldown), and per hour per address and per IP.
    code_resend_cooldown: int = Field(default=60, ge=1, le=3600)
    code_sends_per_email_per_hour: int = Field(default=10, ge=1)
    code_sends_per_ip_per_hour: int = Field(default=100, ge=1)
    # Code checks per minute from one IP (Authgear's validate_per_ip: 60/1m); right ones are
    # given back.
    code_checks_per_ip_per_minute: int = Field(default=60, ge=1)
    # Device authorization requests (RFC 8628 §3.1) per minute from one IPv4 address or IPv6
    # /64: each stores a device code for its lifetime.
    device_authorizations_per_ip_per_minute: int = Field(default=30, ge=1)
    # Wrong user codes entered at /device per hour from one IPv4 address or IPv6 /64, counted
    # before each check (right ones are given back); past it the network is refused until the
    # hour ends.
    device_code_failures_per_ip_per_hour: int = Field(default=20, ge=1)


class LockoutConfig(_Model):
    enabled: bool = True
    max_attempts: int = Field(default=6, ge=1)
    # Failures are counted within this window.
    history_duration: int = Field(default=300, ge=1)
    # First lockout lasts this long, then doubles per further failure, up to maximum_duration.
    minimum_duration: int = Field(default=60, ge=1)
    maximum_duration: int = Field(default=3600, ge=1)


class HTTPConfig(_Model):
    """What one connection may cost the server: without these limits one client could send a
    64 MiB header, trickle a request for ever, or hold every file descriptor with idle
    connections."""

    # Request line + headers: more is answered 431 (an over-long URL alone, 414).
    max_header_bytes: int = Field(default=65536, ge=4096, le=1048576)
    max_headers: int = Field(default=100, ge=10, le=1000)
    # Seconds for a whole request head to arrive (and for a new connection's first request).
    header_timeout: float = Field(default=10, gt=0, le=300)
    # Seconds for a whole request body to arrive once its head has.
    body_timeout: float = Field(default=30, gt=0, le=3600)
    # Seconds an idle keep-alive connection stays open between requests.
    keep_alive_timeout: int = Field(default=5, ge=1, le=300)
    # Open connections per process; null: from the open-file limit (RLIMIT_NOFILE), leaving
    # room for the database pool. At the cap, the longest-idle connection is closed first.
    max_connections: int | None = Field(default=None, ge=1, le=1_000_000)
    # Requests being handled at once per process; more are answered 503 with Retry-After.
    max_concurrent_requests: int = Field(default=1000, ge=1, le=1_000_000)


class ShutdownConfig(_Model):
    """SIGTERM: /readyz answers 503 for ``drain_seconds`` while everything else is still served
    (a load balancer takes the process out), then the listeners close and requests in flight
    get ``grace_seconds`` to finish."""

    drain_seconds: float = Field(default=5, ge=0, le=600)
    grace_seconds: float = Field(default=30, ge=0, le=3600)


class PasswordPolicyConfig(_Model):
    """Authgear's password policy (authenticator.password.policy); see security/password_policy."""

    # Counted in Unicode code points.
    min_length: int = Field(default=8, ge=1, le=1024)
    # ASCII classes; a "symbol" is any character that is not an ASCII letter or digit.
    uppercase_required: bool = False
    lowercase_required: bool = False
    alphabet_required: bool = False
    digit_required: bool = False
    symbol_required: bool = False
    # zxcvbn: level = score + 1 (1..5); 0 turns the check off.
    minimum_guessable_level: int = Field(default=0, ge=0, le=5)
    # Refused as case-insensitive substrings (the account's email is always refused).
    excluded_keywords: tuple[str, ...] = Field(default=(), max_length=200)
    # A new password may not be one of the last history_size passwords, nor one used within
    # history_days days (both 0: no history is kept).
    history_size: int = Field(default=0, ge=0, le=12)
    history_days: int = Field(default=0, ge=0, le=3650)

    @field_validator("excluded_keywords")
    @classmethod
    def _check_keywords(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not k.strip() or len(k) > 100 for k in v):
            raise ValueError("each keyword is 1 to 100 characters")
        return v


class ForgotPasswordConfig(_Model):
    enabled: bool = True
    # Seconds the emailed code and link stay valid (single use in any case). Authgear uses 20
    # minutes for a link and 5 for a code; one mail here carries both, valid 15 minutes.
    lifetime: int = Field(default=900, ge=60, le=3600)


class DeviceTokenConfig(_Model):
    # "Trust this device": a second factor once per expire_in_days on one browser.
    disabled: bool = False
    expire_in_days: int = Field(default=30, ge=1, le=365)


class RecoveryCodeConfig(_Model):
    disabled: bool = False
    count: int = Field(default=10, ge=10, le=50)


class AuthenticationConfig(_Model):
    """Sign-in methods, in Authgear's terms (accounts spec §2.1, §3)."""

    # password and/or passkey; passkeys also need an https public origin (or localhost).
    primary_authenticators: tuple[Literal["password", "passkey"], ...] = ("password", "passkey")
    secondary_authenticators: tuple[Literal["totp"], ...] = ("totp",)
    # disabled: no second step; if_exists: users who enrolled a second factor must use it;
    # required: everyone must (users without one enrol on their next sign-in).
    secondary_authentication_mode: Literal["disabled", "if_exists", "required"] = "if_exists"
    device_token: DeviceTokenConfig = DeviceTokenConfig()
    recovery_code: RecoveryCodeConfig = RecoveryCodeConfig()
    # Changing second factors or passkeys in /settings/security needs a sign-in at most this
    # many seconds old; older sessions confirm it is them first.
    settings_reauth_max_age: int = Field(default=900, ge=60, le=86400)

    @model_validator(mode="after")
    def _check(self) -> AuthenticationConfig:
        if not self.primary_authenticators:
            raise ValueError("primary_authenticators needs password or passkey")
        if len(set(self.primary_authenticators)) != len(self.primary_authenticators):
            raise ValueError("primary_authenticators lists one twice")
        if self.secondary_authentication_mode == "required" and not self.secondary_authenticators:
            raise ValueError("secondary_authentication_mode: required needs totp")
        return self

    @property
    def passkeys(self) -> bool:
        return "passkey" in self.primary_authenticators

    @property
    def passwords(self) -> bool:
        return "password" in self.primary_authenticators

    @property
    def totp(self) -> bool:
        return (
            "totp" in self.secondary_authenticators
            and self.secondary_authentication_mode != "disabled"
        )


class DeviceAuthorizationConfig(_Model):
    """The device authorization grant (RFC 8628), for clients listing it in grant_types."""

    # Seconds a device code and its user code stay valid (RFC 8628 §3.2 expires_in).
    lifetime: int = Field(default=600, ge=60, le=1800)
    # Seconds a device waits between polls (RFC 8628 §3.2 interval); each slow_down adds 5.
    interval: int = Field(default=5, ge=1, le=60)
    # Wrong user codes entered at /device (from anywhere) during one device code's life after
    # which that code can no longer be approved: it bounds a distributed guess of one code at
    # this many tries in 20^8 (RFC 8628 §5.1), whatever the number of addresses.
    max_failed_entries: int = Field(default=1000, ge=1, le=1_000_000)


class ServerConfig(_Model):
    # None: http://<host>:<port>.
    public_origin: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=0, le=65535)
    # Serve the resolver on its own port too (Authgear uses 3001). None: main port only.
    resolver_port: int | None = Field(default=None, ge=0, le=65535)
    database_url: str | None = Field(default=None, repr=False)
    # Connections each process keeps to a server database (PostgreSQL), and how many more it
    # may open under load.
    database_pool_size: int = Field(default=10, ge=1, le=500)
    database_max_overflow: int = Field(default=10, ge=0, le=500)
    # Apply database migrations when `serve` starts (`serve --no-migrate`: false).
    auto_migrate: bool = True
    # Redis for rate limits shared by every server process (optional; without it, several
    # processes share limits through the database).
    redis_url: str | None = Field(default=None, repr=False)
    # Encrypts signing keys and the refresh-token key in the database (base64 of 32 bytes).
    key_encryption_key: str | None = Field(default=None, repr=False)
    # Earlier key-encryption keys, readable during a rotation.
    old_key_encryption_keys: tuple[str, ...] = Field(default=(), repr=False)
    # Server processes on this host (`authgear serve --workers N`).
    workers: int = Field(default=1, ge=1, le=64)
    # How often each process re-reads the signing keys (a rotation activates after 2x this).
    key_refresh_interval: int = Field(default=30, ge=1, le=3600)
    # /metrics in Prometheus text format: on its own listener (metrics_port), or on the main
    # port for requests bearing metrics_token. Neither: not served.
    metrics_enabled: bool = True
    metrics_host: str | None = None
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_token: str | None = Field(default=None, repr=False, min_length=16)
    # The admin API (/_api/admin) and portal (/portal): off entirely, or only on their own
    # listener (admin_port) instead of the public one.
    admin_enabled: bool = True
    admin_host: str | None = None
    admin_port: int | None = Field(default=None, ge=1, le=65535)
    app_name: str = "Authgear"
    # Seconds an authorization code stays exchangeable (single use in any case).
    authorization_code_lifetime: int = Field(default=300, ge=1, le=600)
    clients: tuple[ClientConfig, ...] = ()
    session: SessionConfig = SessionConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    lockout: LockoutConfig = LockoutConfig()
    password_hashing: PasswordHashingConfig = PasswordHashingConfig()
    # Outgoing mail: smtp://user:password@host:25, smtps://host:465 (TLS), smtp+starttls://host:587
    # or smtp://host:587?starttls=true. None: messages are written to DATA_DIR/outbox/ as .eml
    # files (see `authgear outbox`).
    smtp_url: str | None = Field(default=None, repr=False)
    # The From header. None: "<app_name> <no-reply@<issuer host>>".
    email_from: str | None = Field(default=None, max_length=320)
    # Tries per message (the first included), waiting mail_retry_delay seconds, doubling.
    mail_send_attempts: int = Field(default=5, ge=1, le=20)
    mail_retry_delay: float = Field(default=2.0, gt=0, le=600)
    # Email verification: off, optional (users may verify from their settings) or required
    # (signing up and signing in continue only once the address is verified).
    verification: Literal["off", "optional", "required"] = "optional"
    # Seconds a verification code or link stays valid (Authgear: 5 minutes).
    verification_code_lifetime: int = Field(default=300, ge=60, le=3600)
    # Wrong tries before an emailed code is revoked (a new one must be sent).
    code_max_failed_attempts: int = Field(default=5, ge=1, le=100)
    password_policy: PasswordPolicyConfig = PasswordPolicyConfig()
    forgot_password: ForgotPasswordConfig = ForgotPasswordConfig()
    # A password reset ends all of the user's sessions, a change in settings all but the
    # current one (beyond Authgear, which keeps them).
    password_change_ends_sessions: bool = True
    authentication: AuthenticationConfig = AuthenticationConfig()
    device_authorization: DeviceAuthorizationConfig = DeviceAuthorizationConfig()
    # Upstream OpenID Connect / OAuth 2.0 providers ("Continue with Google"): sso/config.py.
    identity_providers: tuple[IdentityProviderConfig, ...] = ()
    # Seconds between purges of expired rows (sessions, tokens, codes, login flows, lockouts).
    purge_interval: int = Field(default=600, ge=1, le=86400)
    # Days the audit log keeps an entry. None: forever.
    audit_log_retention_days: int | None = Field(default=90, ge=1)
    # Trust X-Forwarded-For / X-Forwarded-Proto from these proxy addresses.
    trusted_proxies: tuple[str, ...] = ()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # text: one readable line per event; json: one JSON object per line (uvicorn's too).
    log_format: Literal["text", "json"] = "text"
    http: HTTPConfig = HTTPConfig()
    shutdown: ShutdownConfig = ShutdownConfig()

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (like 10.0.0.0/24)"
                ) from None
        return v

    @field_validator("key_encryption_key")
    @classmethod
    def _check_kek(cls, v: str | None) -> str | None:
        if v is not None:
            kek_bytes(v)
        return v

    @field_validator("old_key_encryption_keys")
    @classmethod
    def _check_old_keks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for key in v:
            kek_bytes(key)
        return v

    @field_validator("public_origin")
    @classmethod
    def _check_origin(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an origin like https://auth.example.com")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be an origin without a path")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from authgear.server.mail.transport import parse_smtp_url

        parse_smtp_url(v)  # ValueError with a message that never repeats the password
        return v

    @field_validator("email_from")
    @classmethod
    def _check_email_from(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c in v for c in "\r\n\x00")):
            raise ValueError("must be one line, e.g. 'Example <no-reply@example.com>'")
        return v

    @model_validator(mode="after")
    def _unique_clients(self) -> ServerConfig:
        seen: set[str] = set()
        for c in self.clients:
            if c.id in seen:
                raise ValueError(f"client id {c.id!r} appears twice")
            seen.add(c.id)
        return self

    @model_validator(mode="after")
    def _unique_providers(self) -> ServerConfig:
        check_unique(self.identity_providers)
        return self

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServerConfig:
        named = [("port", self.port), ("resolver_port", self.resolver_port)]
        named += [("admin_port", self.admin_port), ("metrics_port", self.metrics_port)]
        used: dict[int, str] = {}
        for name, port in named:
            if port is None:
                continue
            if port in used:
                raise ValueError(f"{name} and {used[port]} are both {port}: use different ports")
            used[port] = name
        return self

    def client(self, client_id: str) -> ClientConfig | None:
        for c in self.clients:
            if c.id == client_id:
                return c
        return None

    def identity_provider(self, alias: str) -> IdentityProviderConfig | None:
        for p in self.identity_providers:
            if p.alias == alias:
                return p
        return None

    @property
    def issuer(self) -> str:
        if self.public_origin:
            return self.public_origin
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def secure_cookies(self) -> bool:
        return self.issuer.startswith("https://")


class Settings:
    """A loaded configuration plus where it came from."""

    def __init__(
        self,
        config: ServerConfig,
        data_dir: Path,
        *,
        config_path: Path | None = None,
        ignored_env: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.config_path = config_path
        # AUTHGEAR_* variables that were set but are not settings (a typo, or the SDK's).
        self.ignored_env = ignored_env

    @property
    def database_url(self) -> str:
        if self.config.database_url:
            return self.config.database_url
        return f"sqlite:///{self.data_dir / 'authgear.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def database_name(self) -> str:
        """The database as an operator recognises it, without a password or options:
        ``postgresql://authgear@db:5432/authgear``, or the SQLite file's absolute path."""
        return database_name(self.database_url)


def database_name(url: str) -> str:
    from sqlalchemy.engine import URL, make_url

    try:
        parsed = make_url(url)
    except Exception:
        return "(an unreadable database URL)"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database or ":memory:"
        return f"sqlite:///{Path(path).resolve() if path != ':memory:' else path}"
    # Rebuilt from its parts: no password, no options (URL.set cannot remove a password).
    bare = URL.create(
        backend,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    return bare.render_as_string(hide_password=False)


def _coerce_env(value: str) -> Any:
    low = value.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("null", "none", ""):
        return None
    try:
        return int(value)
    except ValueError:
        pass
    if value.lstrip().startswith(("[", "{")):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def _env_names() -> dict[str, tuple[str, ...]]:
    """Every variable that is a setting, and the key path it sets."""
    names: dict[str, tuple[str, ...]] = {}
    for field, info in ServerConfig.model_fields.items():
        names[f"{ENV_PREFIX}{field.upper()}"] = (field,)
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            for sub in nested.model_fields:
                names[f"{ENV_PREFIX}{field.upper()}__{sub.upper()}"] = (field, sub)
    for field in (*SECRET_SETTINGS, *SECRET_FILE_LISTS):
        key = field if field in SECRET_FILE_LISTS else f"{field}_file"
        names[f"{ENV_PREFIX}{key.upper()}"] = (key,)
    return names


class _Sources:
    """Where each key's value came from, to name it in an error."""

    def __init__(self, default: str) -> None:
        self.default = default
        self.by_path: dict[tuple[str, ...], str] = {}

    def of(self, loc: tuple[Any, ...]) -> str:
        path = tuple(str(p) for p in loc)
        for n in range(len(path), 0, -1):
            if path[:n] in self.by_path:
                return self.by_path[path[:n]]
        return self.default


def apply_env(
    raw: dict[str, Any], environ: Mapping[str, str], sources: _Sources | None = None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The config with the environment's settings on top, and the AUTHGEAR_* names ignored."""
    out = dict(raw)
    known = _env_names()
    ignored = []
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        if name.startswith(IDP_ENV_PREFIX):
            _apply_provider_env(out, name, value, sources)
            continue
        path = known.get(name)
        if path is None:
            ignored.append(name)
            continue
        target = out
        for key in path[:-1]:
            nested = target.get(key)
            nested = dict(nested) if isinstance(nested, dict) else {}
            target[key] = nested
            target = nested
        target[path[-1]] = _coerce_env(value)
        if sources is not None:
            sources.by_path[path] = f"environment {name}"
    return out, tuple(ignored)


def _apply_provider_env(
    raw: dict[str, Any], name: str, value: str, sources: _Sources | None
) -> None:
    """``AUTHGEAR_IDENTITY_PROVIDERS__<ALIAS>__CLIENT_SECRET[_FILE]`` on the provider with that
    alias; a name that fits no provider is an error (a typo would otherwise leave the secret
    unset)."""
    providers = raw.get("identity_providers")
    entries = [dict(p) if isinstance(p, dict) else p for p in providers or []]
    for i, entry in enumerate(entries):
        alias = entry.get("alias") if isinstance(entry, dict) else None
        if not isinstance(alias, str):
            continue
        for key in IDP_SECRET_SETTINGS:
            for setting in (key, f"{key}_file"):
                if name == env_name(alias, setting.upper()):
                    entry[setting] = value
                    raw["identity_providers"] = entries
                    if sources is not None:
                        sources.by_path[("identity_providers", str(i), setting)] = (
                            f"environment {name}"
                        )
                    return
    raise ConfigError(
        f"environment {name}: names no identity provider (expected "
        f"{IDP_ENV_PREFIX}<ALIAS>__CLIENT_SECRET or ..._FILE for a configured alias)"
    )


def _read_secret(path_value: Any, where: str, key: str) -> tuple[str, str]:
    if not isinstance(path_value, str) or not path_value:
        raise ConfigError(f"{where}: {key}: must be the path of a file")
    path = Path(path_value)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"{where}: {key}: cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {key}: {path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{where}: {key}: {path} is empty")
    return text, f"file {path} ({key})"


def _resolve_secret(
    target: dict[str, Any], name: str, sources: _Sources, prefix: tuple[str, ...] = ()
) -> None:
    file_key = f"{name}_file"
    if target.get(file_key) is None:
        target.pop(file_key, None)
        return
    where = sources.of((*prefix, file_key))
    if target.get(name) is not None:
        raise ConfigError(
            f"{where}: {'.'.join((*prefix, file_key))}: {name} is set too "
            f"({sources.of((*prefix, name))}); set one of them"
        )
    value, origin = _read_secret(target.pop(file_key), where, file_key)
    target[name] = value
    sources.by_path[(*prefix, name)] = origin


def resolve_secret_files(raw: dict[str, Any], sources: _Sources) -> dict[str, Any]:
    """``<name>_file`` settings replaced by the content of the file they name."""
    out = dict(raw)
    for name in SECRET_SETTINGS:
        _resolve_secret(out, name, sources)
    for file_key, name in SECRET_FILE_LISTS.items():
        files = out.pop(file_key, None)
        if files is None:
            continue
        where = sources.of((file_key,))
        if not isinstance(files, list | tuple):
            raise ConfigError(f"{where}: {file_key}: must be a list of file paths")
        out[name] = [_read_secret(f, where, file_key)[0] for f in files]
        sources.by_path[(name,)] = where
    clients = out.get("clients")
    if isinstance(clients, list):
        out["clients"] = [dict(c) if isinstance(c, dict) else c for c in clients]
        for i, client in enumerate(out["clients"]):
            if isinstance(client, dict):
                for name in CLIENT_SECRET_SETTINGS:
                    _resolve_secret(client, name, sources, ("clients", str(i)))
    providers = out.get("identity_providers")
    if isinstance(providers, list):
        out["identity_providers"] = [dict(p) if isinstance(p, dict) else p for p in providers]
        for i, provider in enumerate(out["identity_providers"]):
            if isinstance(provider, dict):
                for name in IDP_SECRET_SETTINGS:
                    _resolve_secret(provider, name, sources, ("identity_providers", str(i)))
    return out


def _format_validation_error(sources: _Sources, err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{sources.of(first['loc'])}: {where}: {first['msg']}{more}"


def _read_config_file(path: Path, *, missing_ok: bool) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ConfigError(
            f"{path}: config file not found (run `authgear serve` once to create it)"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return raw


def load_settings(
    data_dir: Path,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    missing_ok: bool = False,
) -> Settings:
    """The config file plus environment overrides and secret files. ``missing_ok``: no file
    means defaults (for maintenance commands given a --database-url)."""
    env = os.environ if environ is None else environ
    path = config_path or data_dir / CONFIG_FILE
    raw = _read_config_file(path, missing_ok=missing_ok)
    sources = _Sources(str(path))
    raw, ignored = apply_env(raw, env, sources)
    raw = resolve_secret_files(raw, sources)
    try:
        config = ServerConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(sources, e)) from None
    return Settings(config, data_dir, config_path=path, ignored_env=ignored)


def hash_client_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def _yaml_value(value: Any) -> str:
    return "null" if value is None else json.dumps(value)


def default_config_text(
    host: str,
    port: int,
    *,
    public_origin: str | None = None,
    database_url: str | None = None,
    redis_url: str | None = None,
    workers: int = 1,
) -> tuple[str, dict[str, str]]:
    """The commented YAML written on first run (with what `serve` was told on its command
    line, so later commands in this folder use the same database), and the client ids."""
    native_id = "native-" + uuid.uuid4().hex[:12]
    web_id = "web-" + uuid.uuid4().hex[:12]
    # Example web app (examples/) runs on port 8000.
    text = f"""\
# Authgear server configuration. Every value can be overridden by an environment variable:
# AUTHGEAR_<KEY> for top-level keys, AUTHGEAR_<KEY>__<SUBKEY> for nested ones
# (for example AUTHGEAR_PUBLIC_ORIGIN=https://auth.example.com
# or AUTHGEAR_RATE_LIMITS__ENABLED=false).

# The origin apps and browsers use to reach this server. It is the token issuer and the base of
# every endpoint URL; set it to the public https origin when the server runs behind a proxy.
# null: http://<host>:<port>.
public_origin: {_yaml_value(public_origin)}

# Where `authgear serve` listens.
host: {host}
port: {port}

# Also serve the resolver (/_resolver/resolve) on its own port, as Authgear does on 3001. null: off.
resolver_port: null

# SQLAlchemy URL of the database. null: SQLite in this data folder (authgear.db).
# For several servers sharing one database: postgresql://user:password@host:5432/authgear
# (add ?sslmode=verify-full&sslrootcert=/path/ca.pem for TLS). Keep the password out of this
# file with database_url_file: /run/secrets/database_url (a file holding the URL), or the
# AUTHGEAR_DATABASE_URL / AUTHGEAR_DATABASE_URL_FILE variables. The same goes for redis_url,
# key_encryption_key and metrics_token (each also as <name>_file).
database_url: {_yaml_value(database_url)}
database_pool_size: 10      # connections per process (PostgreSQL), plus up to
database_max_overflow: 10   # this many more under load
auto_migrate: true          # apply migrations at start (false: run `authgear db upgrade`)

# Optional Redis (redis://host:6379/0) for rate limits shared by every server process.
# While Redis is away, the limits are counted in the database instead.
redis_url: {_yaml_value(redis_url)}

# Encrypts the signing keys and the refresh-token key in the database: 32 random bytes in
# base64 (`authgear keys new-kek`). Better from a file (key_encryption_key_file) or the
# AUTHGEAR_KEY_ENCRYPTION_KEY variable than here. null: stored unencrypted.
key_encryption_key: null

# Server processes on this machine (like `authgear serve --workers N`).
workers: {workers}

# Seconds between re-reads of the signing keys by each process (see `authgear keys rotate`).
key_refresh_interval: 30

# Prometheus metrics at /metrics: on their own port (metrics_port, on metrics_host or host),
# or on the main port for requests with "Authorization: Bearer <metrics_token>". Neither set:
# /metrics is not served. Never expose it on the public port without the token.
metrics_enabled: true
metrics_port: null

# The admin API (/_api/admin) and portal (/portal). admin_port: serve them only there
# (on admin_host or host), not on the public port. admin_enabled: false turns them off.
admin_enabled: true
admin_port: null

# Name shown on the login and sign-up pages.
app_name: Authgear

# Proxy addresses or networks (10.0.0.0/24) whose X-Forwarded-For is trusted.
trusted_proxies: []

# Redirect URIs match as exact strings (OAuth 2.1, RFC 9700 section 2.1). One exception
# (RFC 8252 section 7.3): for a public client, a loopback IP literal written without a port
# (http://127.0.0.1/... or http://[::1]/...) matches that URI on any port. A URI with a port
# matches only that port, and http://localhost/... gets no exception (RFC 8252 section 8.3
# prefers the IP literal). URIs with userinfo, a fragment, a backslash, spaces, percent-encoding
# in the host or . / .. path segments are refused, here and in requests.
clients:
  # A public client for native and command-line apps (the Python SDK's `authenticate()`).
  - id: {native_id}
    name: Native app
    type: public
    redirect_uris:
      - http://127.0.0.1/oauth-redirect   # the Python SDK's authenticate() and `authgear login`
      - http://127.0.0.1/callback
    post_logout_redirect_uris: []
    allowed_origins: []
    access_token_lifetime: 1800        # seconds, at least 300
    refresh_token_lifetime: 31449600   # 52 weeks
    refresh_token_idle_timeout: 2592000  # 30 days
    # Each refresh returns a new refresh token (RFC 9700 section 4.14.2); a reused old one ends
    # the session. Default: true for public clients, false for confidential ones.
    refresh_token_rotation: true
    access_token_format: jwt           # or: opaque
    # PKCE (S256) is required on every code flow; grants this client may use. The device
    # grant (RFC 8628) lets `authgear login` sign in where no browser can open: the user
    # approves at <public_origin>/device on another device. Remove it to turn that off.
    grant_types:
      - authorization_code
      - refresh_token
      - urn:ietf:params:oauth:grant-type:device_code

  # A public client for the example web app in examples/ (a browser app on port 8000).
  - id: {web_id}
    name: Example web app
    type: public
    redirect_uris:
      - http://127.0.0.1:8000/auth/callback
      - http://localhost:8000/auth/callback
    post_logout_redirect_uris:
      - http://127.0.0.1:8000/
      - http://localhost:8000/
    allowed_origins:
      - http://127.0.0.1:8000
      - http://localhost:8000

  # A confidential client (a server-side web app) looks like this; create the hash with
  # `authgear hash-secret`:
  # - id: my-backend
  #   type: confidential
  #   client_secret_hash: sha256:...
  #   redirect_uris: [https://app.example.com/callback]
  #   # Legacy apps that cannot send PKCE (confidential clients only):
  #   # pkce_required: false
  #   # Machine-to-machine tokens (confidential clients only) and the scopes they may carry
  #   # (never openid, offline_access or https://authgear.com/scopes/...):
  #   # grant_types: [authorization_code, refresh_token, client_credentials]
  #   # allowed_scopes: [https://api.example.com/read]

# The browser (IdP) session behind the login page's cookie.
session:
  cookie_name: session
  lifetime: 31449600
  idle_timeout: 2592000
  max_per_user: 100   # browser sessions and app grants; past it the least recently used ends

# Requests over a limit get HTTP 429 with error "x_rate_limited".
rate_limits:
  enabled: true
  token_per_ip_per_minute: 600
  token_per_user_per_minute: 120
  password_failures_per_ip_per_minute: 30
  authorize_per_ip_per_minute: 600
  signup_per_ip_per_hour: 60
  login_flows_per_ip: 300   # unfinished sign-ins (kept an hour) per IPv4 address or IPv6 /64
  code_resend_cooldown: 60          # seconds between two emailed codes to one address
  code_sends_per_email_per_hour: 10
  code_sends_per_ip_per_hour: 100
  code_checks_per_ip_per_minute: 60
  device_authorizations_per_ip_per_minute: 30   # device codes asked for (RFC 8628)
  device_code_failures_per_ip_per_hour: 20      # wrong user codes typed at /device

# Too many wrong passwords for one account lock it for a while (doubling up to maximum_duration).
lockout:
  enabled: true
  max_attempts: 6
  history_duration: 300
  minimum_duration: 60
  maximum_duration: 3600

# Outgoing mail (verification codes, password resets, notices). null: every message is written
# to the data folder's outbox/ as an .eml file instead; read them with `authgear outbox list` and
# `authgear outbox show latest`. Examples: smtp://user:password@smtp.example.com:587?starttls=true,
# smtps://user:password@smtp.example.com (TLS on port 465), smtp+starttls://host:587.
# Mail is sent in the background by the process that handled the request, with retries.
smtp_url: null
email_from: null          # null: "<app_name> <no-reply@<public host>>"
mail_send_attempts: 5
mail_retry_delay: 2       # seconds before the first retry, doubling

# Email verification: off | optional (a banner and a "verify" action in settings) | required
# (sign-up and sign-in continue only once the address is verified by an emailed code or link).
verification: optional
verification_code_lifetime: 300   # seconds (6-digit code or link)
code_max_failed_attempts: 5       # wrong tries before an emailed code is revoked

# Password rules for sign-up and password changes (Authgear's policy).
password_policy:
  min_length: 8                 # Unicode code points
  uppercase_required: false
  lowercase_required: false
  alphabet_required: false
  digit_required: false
  symbol_required: false
  minimum_guessable_level: 0    # 1-5: zxcvbn score + 1 at least; 0: off
  excluded_keywords: []         # refused as substrings (the user's email always is)
  history_size: 0               # refuse the last N passwords
  history_days: 0               # refuse passwords used within N days

# "Forgot password?" on the login page: an emailed code and link, single use.
forgot_password:
  enabled: true
  lifetime: 900                 # seconds (15 minutes)

# A password reset ends all of the user's sessions, a change in settings all other ones.
password_change_ends_sessions: true
# How users sign in (Authgear's names). Passkeys need an https public_origin (or localhost).
authentication:
  primary_authenticators: [password, passkey]
  secondary_authenticators: [totp]
  # disabled | if_exists (who enrolled a second factor must use it) | required (everyone;
  # users without one enrol on their next sign-in)
  secondary_authentication_mode: if_exists
  device_token:
    disabled: false      # "trust this device" skips the second factor on that browser
    expire_in_days: 30
  recovery_code:
    disabled: false
    count: 10
  settings_reauth_max_age: 900  # seconds; older sign-ins confirm before changing factors

# Signing in on another device (RFC 8628), for clients whose grant_types list
# urn:ietf:params:oauth:grant-type:device_code: the device shows a code, the user enters it
# at <public_origin>/device, signs in and approves.
device_authorization:
  lifetime: 600             # seconds a code stays valid
  interval: 5               # seconds between polls (each slow_down adds 5)
  max_failed_entries: 1000  # wrong codes typed anywhere during one code's life, then it is dead

# Argon2 password checks at once per server process (null: twice the cores); a check that
# finds no free slot within queue_timeout seconds is answered 503 with Retry-After.
password_hashing:
  max_concurrent: null
  queue_timeout: 5

# Seconds between purges of expired sessions, tokens, codes, sign-in flows and lockouts.
purge_interval: 600

# Days the audit log keeps an entry (null: forever).
audit_log_retention_days: 90

log_level: info
log_format: text   # or json: one object per line, with the request id

# Limits per connection and process (431 for oversized headers, 408 for slow clients).
http:
  max_header_bytes: 65536
  max_headers: 100
  header_timeout: 10
  body_timeout: 30
  keep_alive_timeout: 5
  max_connections: null        # null: from the open-file limit
  max_concurrent_requests: 1000

# On SIGTERM: /readyz answers 503 for drain_seconds while requests are still served, then
# requests in flight get grace_seconds to finish.
shutdown:
  drain_seconds: 5
  grace_seconds: 30
"""
    return text, {"native": native_id, "web": web_id}
