"""What every backend mode shares: the user, the errors (RFC 6750) and the request view."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

CLAIM_IS_ANONYMOUS = "https://authgear.com/claims/user/is_anonymous"
CLAIM_IS_VERIFIED = "https://authgear.com/claims/user/is_verified"
CLAIM_CAN_REAUTHENTICATE = "https://authgear.com/claims/user/can_reauthenticate"
CLAIM_ROLES = "https://authgear.com/claims/user/roles"

#: The longest ``Authorization`` header (and token) we look at; longer ones are refused unread.
MAX_AUTHORIZATION_LENGTH = 8192

Source = Literal["jwt", "resolver", "proxy"]


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    """Who is calling: the same shape from a verified JWT, the resolver, or proxy headers.

    ``scopes`` and ``client_id`` come only from a JWT (the resolver's headers do not carry them);
    ``amr`` only from the resolver. ``claims`` holds the JWT's claims, or the resolver's headers.
    """

    sub: str
    roles: tuple[str, ...] = ()
    is_verified: bool = False
    is_anonymous: bool = False
    can_reauthenticate: bool = False
    client_id: str | None = None
    scopes: frozenset[str] = frozenset()
    authenticated_at: int | None = None
    expires_at: int | None = None
    amr: tuple[str, ...] = ()
    source: Source = "jwt"
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def has_roles(self, roles: Iterable[str], *, any_of: bool = False) -> bool:
        wanted = set(roles)
        if not wanted:
            return True
        have = set(self.roles)
        return bool(wanted & have) if any_of else wanted <= have

    def has_scopes(self, scopes: Iterable[str]) -> bool:
        return set(scopes) <= self.scopes

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, without the raw claims."""
        return {
            "sub": self.sub,
            "roles": list(self.roles),
            "is_verified": self.is_verified,
            "is_anonymous": self.is_anonymous,
            "can_reauthenticate": self.can_reauthenticate,
            "client_id": self.client_id,
            "scopes": sorted(self.scopes),
            "authenticated_at": self.authenticated_at,
            "expires_at": self.expires_at,
            "amr": list(self.amr),
            "source": self.source,
        }


# --- errors ------------------------------------------------------------------------------


def _quote(value: str) -> str:
    # RFC 6750 §3: the attribute values use %x20-21 / %x23-5B / %x5D-7E.
    cleaned = "".join(c for c in value if " " <= c <= "~" and c not in '"\\')
    return f'"{cleaned}"'


class BackendError(Exception):
    """Base class of everything ``authgear.backend`` raises."""


class AuthError(BackendError):
    """The request is not allowed: an HTTP status, an RFC 6750 challenge and a JSON body."""

    status_code = 401
    error: str | None = None

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def www_authenticate(self, realm: str = "api") -> str:
        parts = [f"realm={_quote(realm)}"]
        if self.error:
            parts.append(f"error={_quote(self.error)}")
            parts.append(f"error_description={_quote(self.description)}")
        return "Bearer " + ", ".join(parts)

    def headers(self, realm: str = "api") -> dict[str, str]:
        return {"WWW-Authenticate": self.www_authenticate(realm), "Cache-Control": "no-store"}

    def body(self) -> dict[str, str]:
        return {"error": self.error or "unauthorized", "error_description": self.description}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


class MissingCredentials(AuthError):
    """No credentials, or not Bearer ones: 401 with a bare ``Bearer realm=...`` challenge."""

    def __init__(self, description: str = "authentication required") -> None:
        super().__init__(description)


class InvalidToken(AuthError):
    """Malformed, expired, revoked, forged or otherwise unacceptable: 401 ``invalid_token``."""

    error = "invalid_token"

    def __init__(self, description: str = "invalid access token") -> None:
        super().__init__(description)


class InsufficientScope(AuthError):
    """Authenticated but lacking a role or scope: 403 ``insufficient_scope``."""

    status_code = 403
    error = "insufficient_scope"

    def __init__(self, description: str, scopes: Iterable[str] = ()) -> None:
        super().__init__(description)
        self.scopes = tuple(scopes)

    def www_authenticate(self, realm: str = "api") -> str:
        challenge = super().www_authenticate(realm)
        if self.scopes:
            challenge += f", scope={_quote(' '.join(self.scopes))}"
        return challenge


class BackendUnavailable(BackendError):
    """Authgear could not be asked (no keys yet, resolver down): adapters answer 503."""

    status_code = 503

    def body_bytes(self) -> bytes:
        return json.dumps(
            {"error": "temporarily_unavailable", "error_description": "try again later"}
        ).encode()


class ConfigurationError(BackendError, ValueError):
    """The verifier was set up wrongly (e.g. an HMAC algorithm, an issuer mismatch)."""


def require(
    user: AuthenticatedUser,
    *,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    any_role: bool = False,
) -> AuthenticatedUser:
    """Raise :class:`InsufficientScope` unless ``user`` has the roles (all, or any) and scopes."""
    roles = tuple(roles)
    scopes = tuple(scopes)
    if scopes and not user.has_scopes(scopes):
        raise InsufficientScope("the access token lacks a required scope", scopes)
    if roles and not user.has_roles(roles, any_of=any_role):
        raise InsufficientScope("the user lacks a required role")
    return user


# --- the request, as adapters present it -------------------------------------------------


class RequestLike(Protocol):
    """The little an authenticator reads from a request; each adapter wraps its own."""

    def header(self, name: str) -> str | None:
        """The value of a header (``name`` is lower case), or None."""
        ...

    def cookie(self, name: str) -> str | None: ...

    @property
    def peer(self) -> str | None:
        """The address of the TCP peer (the proxy, when there is one)."""
        ...


class SimpleRequest:
    """A :class:`RequestLike` from plain values: for tests, scripts and custom frameworks."""

    __slots__ = ("_cookies", "_headers", "_peer")

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        peer: str | None = None,
    ) -> None:
        self._headers = {k.lower(): v for k, v in (headers or {}).items()}
        self._cookies = dict(cookies or {})
        self._peer = peer

    def header(self, name: str) -> str | None:
        return self._headers.get(name)

    def cookie(self, name: str) -> str | None:
        return self._cookies.get(name)

    @property
    def peer(self) -> str | None:
        return self._peer


class Authenticator(Protocol):
    """What the adapters call: :class:`JWTVerifier`, :class:`ResolverClient`,
    :class:`TrustedProxyHeaders`. Raise :class:`AuthError` (or :class:`BackendUnavailable`)."""

    def authenticate(self, request: RequestLike) -> AuthenticatedUser: ...

    async def authenticate_async(self, request: RequestLike) -> AuthenticatedUser: ...


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header.

    No header or another scheme: :class:`MissingCredentials` (RFC 6750 §3.1: no error code).
    An oversized header, an empty token or one with spaces: :class:`InvalidToken`.
    """
    if not authorization:
        raise MissingCredentials()
    if len(authorization) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidToken("the Authorization header is too long")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingCredentials("Bearer authentication required")
    token = value.strip()
    if not token or " " in token or "\t" in token:
        raise InvalidToken("malformed Bearer token")
    return token
