"""What every backend mode shares: who is calling (a user, or a client acting for itself),
the role and scope checks, and the authenticator protocol the adapters call."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from authgear.backend._errors import InsufficientScope, InvalidToken
from authgear.backend._request import RequestLike

CLAIM_IS_ANONYMOUS = "https://authgear.com/claims/user/is_anonymous"
CLAIM_IS_VERIFIED = "https://authgear.com/claims/user/is_verified"
CLAIM_CAN_REAUTHENTICATE = "https://authgear.com/claims/user/can_reauthenticate"
CLAIM_ROLES = "https://authgear.com/claims/user/roles"
#: The grant type claim (Auth0's convention) that marks a client_credentials access token.
CLAIM_GRANT_TYPE = "gty"
CLIENT_CREDENTIALS = "client-credentials"

Source = Literal["jwt", "resolver", "proxy"]
#: How the caller proved itself: an ``Authorization: Bearer`` token, or a browser's session
#: cookie (resolver and proxy modes only, and only where the app allows cookies).
Credential = Literal["bearer", "cookie"]


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    """A signed-in user: the same shape from a verified JWT, the resolver, or proxy headers.

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
    credential: Credential = "bearer"
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    kind: ClassVar[Literal["user"]] = "user"

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
            "kind": "user",
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
            "credential": self.credential,
        }


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    """An application calling for itself (an OAuth ``client_credentials`` token): no user, no
    roles. Only handed out by an authenticator built with ``allow_clients=True``, and only
    accepted where the app asks for a client (``require_client``/``require_principal``)."""

    client_id: str
    scopes: frozenset[str] = frozenset()
    expires_at: int | None = None
    source: Source = "jwt"
    credential: Credential = "bearer"
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    kind: ClassVar[Literal["client"]] = "client"

    def has_scopes(self, scopes: Iterable[str]) -> bool:
        return set(scopes) <= self.scopes

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "client",
            "client_id": self.client_id,
            "scopes": sorted(self.scopes),
            "expires_at": self.expires_at,
            "source": self.source,
            "credential": self.credential,
        }


#: Whoever is calling: a user, or (where allowed) a client.
Principal = AuthenticatedUser | AuthenticatedClient

_USER_SLOTS = tuple(
    getattr(AuthenticatedUser, f.name).__set__ for f in dataclasses.fields(AuthenticatedUser)
)
_new_object = object.__new__


def new_user(
    sub: str,
    roles: tuple[str, ...],
    is_verified: bool,
    is_anonymous: bool,
    can_reauthenticate: bool,
    client_id: str | None,
    scopes: frozenset[str],
    authenticated_at: int | None,
    expires_at: int | None,
    amr: tuple[str, ...],
    source: Source,
    credential: Credential,
    claims: Mapping[str, Any],
) -> AuthenticatedUser:
    """``AuthenticatedUser(...)`` with every field given, in declaration order, at half the
    cost: the frozen dataclass ``__init__`` goes through ``object.__setattr__`` once per field,
    this sets the slots directly. For the JWT verifier's hot path (measured in
    docs/benchmarks.md); the result is equal to the dataclass's own (tested)."""
    user = _new_object(AuthenticatedUser)
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12 = _USER_SLOTS
    s0(user, sub)
    s1(user, roles)
    s2(user, is_verified)
    s3(user, is_anonymous)
    s4(user, can_reauthenticate)
    s5(user, client_id)
    s6(user, scopes)
    s7(user, authenticated_at)
    s8(user, expires_at)
    s9(user, amr)
    s10(user, source)
    s11(user, credential)
    s12(user, claims)
    return user


def admit(principal: Principal, allow_clients: bool) -> Principal:
    """``principal``, unless it is a client and clients are not allowed (:class:`InvalidToken`)."""
    if not allow_clients and type(principal) is AuthenticatedClient:
        raise InvalidToken("a client's token (client_credentials) is not accepted here")
    return principal


def as_user(principal: Principal) -> AuthenticatedUser:
    """The user, or :class:`InvalidToken` for a client: where a user is required a client's
    token is as good as none, whatever the authenticator allows."""
    if type(principal) is not AuthenticatedUser:
        raise InvalidToken("this needs a user's access token, not a client's")
    return principal


def as_client(principal: Principal) -> AuthenticatedClient:
    """The client, or :class:`InvalidToken` for a user."""
    if type(principal) is not AuthenticatedClient:
        raise InvalidToken("this needs a client's access token (client_credentials)")
    return principal


def require(
    principal: Principal,
    *,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    any_role: bool = False,
) -> Principal:
    """Raise :class:`InsufficientScope` unless ``principal`` has the scopes and (a user) the
    roles (all, or any); a client has no roles, so requiring one refuses every client."""
    roles = tuple(roles)
    scopes = tuple(scopes)
    if scopes and not principal.has_scopes(scopes):
        raise InsufficientScope("the access token lacks a required scope", scopes)
    if roles:
        if type(principal) is not AuthenticatedUser:
            raise InsufficientScope("a client has no roles")
        if not principal.has_roles(roles, any_of=any_role):
            raise InsufficientScope("the user lacks a required role")
    return principal


#: What an endpoint accepts: a user (the default everywhere), a client, or either.
Wanted = Literal["user", "client", "any"]


def check(
    principal: Principal,
    wanted: Wanted = "user",
    *,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    any_role: bool = False,
) -> Principal:
    """``principal`` if it is what the endpoint accepts and has the roles and scopes:
    :class:`InvalidToken` (401) for the wrong kind, :class:`InsufficientScope` (403) else."""
    if wanted == "user":
        as_user(principal)
    elif wanted == "client":
        as_client(principal)
    return require(principal, roles=roles, scopes=scopes, any_role=any_role)


class Authenticator(Protocol):
    """What the adapters call: :class:`JWTVerifier`, :class:`ResolverClient`,
    :class:`TrustedProxyHeaders`. They raise a :class:`~authgear.backend.BackendError`.

    An authenticator may also have ``authenticate_nowait(request) -> Principal | None``: the
    answer when it needs no I/O, None when it would; the ASGI adapters try it first."""

    def authenticate(self, request: RequestLike) -> Principal: ...

    async def authenticate_async(self, request: RequestLike) -> Principal: ...
