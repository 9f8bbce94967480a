"""Server configuration: a YAML file in the data folder, overridable by environment variables.

Environment variables are ``AUTHGEAR_<KEY>`` for top-level keys and ``AUTHGEAR_<KEY>__<SUBKEY>`` for
nested ones, e.g. ``AUTHGEAR_PUBLIC_ORIGIN`` or ``AUTHGEAR_RATE_LIMITS__ENABLED=false``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from authgear.server.security.redirect_uris import check_registered

CONFIG_FILE = "authgear.yaml"
ENV_PREFIX = "AUTHGEAR_"

# Authgear's defaults (seconds).
DEFAULT_ACCESS_TOKEN_LIFETIME = 1800
DEFAULT_REFRESH_TOKEN_LIFETIME = 31449600  # 52 weeks
DEFAULT_REFRESH_TOKEN_IDLE_TIMEOUT = 2592000  # 30 days


class ConfigError(Exception):
    """The configuration cannot be used; the message is one readable line."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


GrantType = Literal["authorization_code", "refresh_token", "client_credentials"]
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


class LockoutConfig(_Model):
    enabled: bool = True
    max_attempts: int = Field(default=6, ge=1)
    # Failures are counted within this window.
    history_duration: int = Field(default=300, ge=1)
    # First lockout lasts this long, then doubles per further failure, up to maximum_duration.
    minimum_duration: int = Field(default=60, ge=1)
    maximum_duration: int = Field(default=3600, ge=1)


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


class ServerConfig(_Model):
    # None: http://<host>:<port>.
    public_origin: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=0, le=65535)
    # Serve the resolver on its own port too (Authgear uses 3001). None: main port only.
    resolver_port: int | None = Field(default=None, ge=0, le=65535)
    database_url: str | None = None
    # Redis for rate limits shared by every server process (optional; without it, several
    # processes share limits through the database).
    redis_url: str | None = None
    # Server processes on this host (`authgear serve --workers N`).
    workers: int = Field(default=1, ge=1, le=64)
    # How often each process re-reads the signing keys (a rotation activates after 2x this).
    key_refresh_interval: int = Field(default=30, ge=1, le=3600)
    # /metrics in Prometheus text format.
    metrics_enabled: bool = True
    app_name: str = "Authgear"
    # Seconds an authorization code stays exchangeable (single use in any case).
    authorization_code_lifetime: int = Field(default=300, ge=1, le=600)
    clients: tuple[ClientConfig, ...] = ()
    session: SessionConfig = SessionConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    lockout: LockoutConfig = LockoutConfig()
    password_hashing: PasswordHashingConfig = PasswordHashingConfig()
    authentication: AuthenticationConfig = AuthenticationConfig()
    # Seconds between purges of expired rows (sessions, tokens, codes, login flows, lockouts).
    purge_interval: int = Field(default=600, ge=1, le=86400)
    # Days the audit log keeps an entry. None: forever.
    audit_log_retention_days: int | None = Field(default=90, ge=1)
    # Trust X-Forwarded-For / X-Forwarded-Proto from these proxy addresses.
    trusted_proxies: tuple[str, ...] = ()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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

    @model_validator(mode="after")
    def _unique_clients(self) -> ServerConfig:
        seen: set[str] = set()
        for c in self.clients:
            if c.id in seen:
                raise ValueError(f"client id {c.id!r} appears twice")
            seen.add(c.id)
        return self

    def client(self, client_id: str) -> ClientConfig | None:
        for c in self.clients:
            if c.id == client_id:
                return c
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

    def __init__(self, config: ServerConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir

    @property
    def database_url(self) -> str:
        if self.config.database_url:
            return self.config.database_url
        return f"sqlite:///{self.data_dir / 'authgear.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


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


def apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    out = dict(raw)
    skip = {"AUTHGEAR_DATA_DIR", "AUTHGEAR_CONFIG"}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in skip:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        target = out
        for key in path[:-1]:
            nested = target.get(key)
            nested = dict(nested) if isinstance(nested, dict) else {}
            target[key] = nested
            target = nested
        target[path[-1]] = _coerce_env(value)
    return out


def _format_validation_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {where}: {first['msg']}{more}"


def load_settings(
    data_dir: Path,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    missing_ok: bool = False,
) -> Settings:
    """The config file plus environment overrides. ``missing_ok``: no file means defaults
    (for maintenance commands given a --database-url)."""
    env = os.environ if environ is None else environ
    path = config_path or data_dir / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            text = ""
        else:
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
    raw = apply_env(raw, env)
    try:
        config = ServerConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(path, e)) from None
    return Settings(config, data_dir)


def hash_client_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def default_config_text(host: str, port: int) -> tuple[str, dict[str, str]]:
    """The commented YAML written on first run, and the generated client ids."""
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
public_origin: null

# Where `authgear serve` listens.
host: {host}
port: {port}

# Also serve the resolver (/_resolver/resolve) on its own port, as Authgear does on 3001. null: off.
resolver_port: null

# SQLAlchemy URL of the database. null: SQLite in this data folder (authgear.db).
# For several servers sharing one database: postgresql://user:password@host:5432/authgear
database_url: null

# Optional Redis (redis://host:6379/0) for rate limits shared by every server process.
redis_url: null

# Server processes on this machine (like `authgear serve --workers N`).
workers: 1

# Seconds between re-reads of the signing keys by each process (see `authgear keys rotate`).
key_refresh_interval: 30

# Serve Prometheus metrics at /metrics.
metrics_enabled: true

# Name shown on the login and sign-up pages.
app_name: Authgear

# Proxy addresses whose X-Forwarded-For / X-Forwarded-Proto headers are trusted.
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
    # PKCE (S256) is required on every code flow; grants this client may use.
    grant_types: [authorization_code, refresh_token]

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

# Too many wrong passwords for one account lock it for a while (doubling up to maximum_duration).
lockout:
  enabled: true
  max_attempts: 6
  history_duration: 300
  minimum_duration: 60
  maximum_duration: 3600

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
"""
    return text, {"native": native_id, "web": web_id}
