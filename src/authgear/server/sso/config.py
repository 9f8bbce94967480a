"""``identity_providers:``: upstream OpenID Connect and OAuth 2.0 providers users sign in with
("Continue with Google"). A generic OpenID Connect provider (``type: oidc``: issuer, discovery)
and Authgear's presets ``google``, ``azureadv2`` (Microsoft Entra ID, ``tenant``) and ``github``
(plain OAuth 2.0 with GitHub's user API). Accounts spec §8.1; docs/server.md "Sign in with
other identity providers".

The client secret comes from ``client_secret``, ``client_secret_file`` (resolved by config.py)
or the environment (``AUTHGEAR_IDENTITY_PROVIDERS__<ALIAS>__CLIENT_SECRET``); it is a
:class:`~pydantic.SecretStr`, so neither a repr nor a dump of the configuration shows it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ProviderType = Literal["oidc", "google", "azureadv2", "github"]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]
LinkingAction = Literal["error", "login_and_link"]

# The alias is a path segment of the callback URL and part of an environment variable name.
ALIAS_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
# RFC 6749 §3.3 scope-token.
_SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# Entra ID's multi-tenant endpoints: any tenant's users (or only work/school, or only personal
# Microsoft accounts); their issuer is the template https://login.microsoftonline.com/{tenantid}/v2.0.
ENTRA_MULTI_TENANT = frozenset({"common", "organizations", "consumers"})
ENTRA_TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
GUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    "oidc": ("openid", "email", "profile"),
    "google": ("openid", "email", "profile"),
    "azureadv2": ("openid", "email", "profile"),
    "github": ("read:user", "user:email"),
}
DISPLAY_NAMES = {"google": "Google", "azureadv2": "Microsoft", "github": "GitHub"}


def is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint_url(value: str) -> str:
    """An upstream URL: https, or http on a loopback host (a provider on this machine, for
    development and tests); no userinfo, query or fragment. ValueError names the rule."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https URL")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("must be https (http only on a loopback host)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain a user name or password")
    if parts.query or parts.fragment or "#" in value:
        raise ValueError("must not have a query or fragment")
    if any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise ValueError("must be printable ASCII without spaces")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClaimMapping(_Model):
    """Where the provider's answer holds each attribute (OpenID Connect types: ID token claims,
    then the userinfo response)."""

    subject: str = Field(default="sub", min_length=1, max_length=100)
    email: str = Field(default="email", min_length=1, max_length=100)
    # null: no claim says the email is verified (only ``email_assume_verified`` does).
    email_verified: str | None = Field(default="email_verified", min_length=1, max_length=100)
    name: str = Field(default="name", min_length=1, max_length=100)


class IdentityProviderConfig(_Model):
    alias: str
    type: ProviderType
    # The button says "Continue with <display_name>". Default: Google, Microsoft, GitHub, or
    # the alias.
    display_name: str | None = Field(default=None, min_length=1, max_length=60)
    client_id: str = Field(min_length=1, max_length=500)
    client_secret: SecretStr | None = Field(default=None, repr=False)
    # Default: from discovery (client_secret_basic when offered); GitHub: client_secret_post.
    token_endpoint_auth_method: AuthMethod | None = None
    # type: oidc. The exact issuer (compared as a string with discovery and every ID token).
    issuer: str | None = None
    # type: oidc. Default: <issuer>/.well-known/openid-configuration.
    discovery_url: str | None = None
    # type: azureadv2. A tenant id or domain, or common / organizations / consumers.
    tenant: str | None = None
    # type: azureadv2 with a multi-tenant ``tenant``: only these tenant ids (empty: any).
    allowed_tenants: tuple[str, ...] = ()
    # type: azureadv2: the cloud's sign-in host (national clouds differ).
    authority: str = "https://login.microsoftonline.com"
    # type: github: GitHub Enterprise Server has its own (https://github.example.com and
    # https://github.example.com/api/v3).
    github_url: str = "https://github.com"
    api_url: str = "https://api.github.com"
    # Default: openid email profile (github: read:user user:email).
    scopes: tuple[str, ...] | None = None
    # Default: sub, email, email_verified, name (azureadv2: Entra's xms_edov says whether the
    # email's domain is verified by the tenant; Entra sends no email_verified).
    claims: ClaimMapping | None = None
    # Treat the provider's email as verified whatever it says (Authgear's
    # claims.email.assume_verified, which Authgear turns on for every preset). Default false:
    # each preset reads the provider's own word (Google's email_verified claim, GitHub's
    # verified primary address, Entra's xms_edov).
    email_assume_verified: bool = False
    # An email that belongs to an existing account: refuse (error, Authgear's default), or let
    # the user sign in to that account in the same flow and then link (login_and_link; only
    # when the provider says the email is verified).
    account_linking: LinkingAction = "error"

    @field_validator("alias")
    @classmethod
    def _check_alias(cls, v: str) -> str:
        if not ALIAS_RE.fullmatch(v):
            raise ValueError(
                "must be 1-40 lower-case letters, digits, '-' or '_' (it is part of the "
                "callback URL), starting with a letter or digit"
            )
        return v

    @field_validator("issuer", "discovery_url")
    @classmethod
    def _check_urls(cls, v: str | None) -> str | None:
        # Kept exactly as written: an issuer is compared as a string (OIDC Discovery §4.3).
        return None if v is None else check_endpoint_url(v)

    @field_validator("authority", "github_url", "api_url")
    @classmethod
    def _check_bases(cls, v: str) -> str:
        return check_endpoint_url(v).rstrip("/")

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for scope in v or ():
            if not _SCOPE_RE.fullmatch(scope):
                raise ValueError(f"{scope[:60]!r} is not a scope token (RFC 6749 §3.3)")
        return v

    @field_validator("allowed_tenants")
    @classmethod
    def _check_tenants(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for tenant in v:
            if not GUID_RE.fullmatch(tenant):
                raise ValueError(f"{tenant[:60]!r} is not a tenant id (a lower-case GUID)")
        return v

    @model_validator(mode="after")
    def _check_type(self) -> IdentityProviderConfig:
        if self.type == "oidc" and self.issuer is None:
            raise ValueError(f"provider {self.alias!r} (type oidc) needs issuer")
        if self.type != "oidc" and (self.issuer or self.discovery_url):
            raise ValueError(
                f"provider {self.alias!r}: issuer and discovery_url are only for type oidc "
                f"({self.type} has its own)"
            )
        if self.type == "azureadv2":
            if not self.tenant or not ENTRA_TENANT_RE.fullmatch(self.tenant):
                raise ValueError(
                    f"provider {self.alias!r} (type azureadv2) needs tenant: a tenant id or "
                    "domain, or common, organizations or consumers"
                )
            if self.allowed_tenants and self.tenant not in ENTRA_MULTI_TENANT:
                raise ValueError(
                    f"provider {self.alias!r}: allowed_tenants is for a multi-tenant tenant "
                    "(common or organizations)"
                )
        elif self.tenant or self.allowed_tenants:
            raise ValueError(f"provider {self.alias!r}: tenant is only for type azureadv2")
        if self.type != "github" and "openid" not in self.scope_list:
            raise ValueError(f"provider {self.alias!r}: scopes must include openid")
        if self.auth_method != "none" and self.client_secret is None:
            raise ValueError(
                f"provider {self.alias!r} needs client_secret (or client_secret_file, or "
                f"{env_name(self.alias, 'CLIENT_SECRET')})"
            )
        if self.auth_method == "none" and self.client_secret is not None:
            raise ValueError(
                f"provider {self.alias!r}: token_endpoint_auth_method none takes no client_secret"
            )
        if self.client_secret is not None and not self.client_secret.get_secret_value().strip():
            raise ValueError(f"provider {self.alias!r}: client_secret is empty")
        return self

    @property
    def auth_method(self) -> AuthMethod | None:
        if self.token_endpoint_auth_method is not None:
            return self.token_endpoint_auth_method
        return "client_secret_post" if self.type == "github" else None

    @property
    def scope_list(self) -> tuple[str, ...]:
        return self.scopes if self.scopes is not None else DEFAULT_SCOPES[self.type]

    @property
    def label(self) -> str:
        return self.display_name or DISPLAY_NAMES.get(self.type, self.alias)

    @property
    def claim_mapping(self) -> ClaimMapping:
        if self.claims is not None:
            return self.claims
        if self.type == "azureadv2":
            return ClaimMapping(email_verified="xms_edov")
        return ClaimMapping()

    @property
    def is_oidc(self) -> bool:
        return self.type != "github"


def env_name(alias: str, key: str) -> str:
    """The environment variable that sets ``key`` of the provider ``alias``."""
    return f"AUTHGEAR_IDENTITY_PROVIDERS__{alias.upper().replace('-', '_')}__{key}"


def check_unique(providers: tuple[IdentityProviderConfig, ...]) -> None:
    """Aliases are unique, and so are their environment variable names (``a-b`` and ``a_b``
    would share one)."""
    seen: dict[str, str] = {}
    for p in providers:
        key = p.alias.replace("-", "_")
        if key in seen:
            if seen[key] == p.alias:
                raise ValueError(f"identity provider alias {p.alias!r} appears twice")
            raise ValueError(
                f"identity provider aliases {seen[key]!r} and {p.alias!r} share the "
                f"environment name {env_name(p.alias, 'CLIENT_SECRET')}; rename one"
            )
        seen[key] = p.alias
