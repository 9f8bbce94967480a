"""Backend integration: know who is calling your API, by JWT or by Authgear's resolver.

    from authgear.backend import JWTVerifier, ResolverClient, TrustedProxyHeaders

    verifier = JWTVerifier("https://myapp.authgear.cloud")   # local check, no call per request
    # ... and revoked sessions refused within seconds (polls the server's revocation feed):
    verifier = JWTVerifier(endpoint, revocations=RevocationFeed(client_id, client_secret))
    user = verifier.verify(token)                            # or await verifier.verify_async(token)

The core imports no web framework and nothing of ``authgear.server`` or ``authgear.client``.
Adapters: ``authgear.backend.asgi`` (Starlette, FastAPI, any ASGI app),
``authgear.backend.fastapi``, ``authgear.backend.flask``, ``authgear.backend.django``.
See docs/backend.md.
"""

from __future__ import annotations

from authgear._errors import AuthgearError
from authgear.backend._errors import (
    AuthError,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    CrossOriginRequest,
    InsufficientScope,
    InvalidToken,
    MissingCredentials,
)
from authgear.backend._jwks import SUPPORTED_ALGORITHMS, parse_jwks
from authgear.backend._jwt import JWTVerifier, principal_from_claims, user_from_claims
from authgear.backend._request import RequestLike, SimpleRequest, bearer_token
from authgear.backend._resolver import (
    PROXY_SECRET_HEADER,
    RESOLVER_HEADERS,
    ResolverClient,
    TrustedProxyHeaders,
    principal_from_headers,
    user_from_headers,
)
from authgear.backend._revocations import RevocationFeed
from authgear.backend._types import (
    AuthenticatedClient,
    AuthenticatedUser,
    Authenticator,
    Credential,
    Principal,
    as_client,
    as_user,
    require,
)

__all__ = [
    "PROXY_SECRET_HEADER",
    "RESOLVER_HEADERS",
    "SUPPORTED_ALGORITHMS",
    "AuthError",
    "AuthenticatedClient",
    "AuthenticatedUser",
    "Authenticator",
    "AuthgearError",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "Credential",
    "CrossOriginRequest",
    "InsufficientScope",
    "InvalidToken",
    "JWTVerifier",
    "MissingCredentials",
    "Principal",
    "RequestLike",
    "ResolverClient",
    "RevocationFeed",
    "SimpleRequest",
    "TrustedProxyHeaders",
    "as_client",
    "as_user",
    "bearer_token",
    "make_authenticator",
    "parse_jwks",
    "principal_from_claims",
    "principal_from_headers",
    "require",
    "user_from_claims",
    "user_from_headers",
]


def make_authenticator(
    mode: str,
    endpoint: str | None = None,
    *,
    trusted_proxies: list[str] | None = None,
    **options: object,
) -> Authenticator:
    """Build one authenticator by name: ``jwt``, ``resolver`` or ``proxy`` (for config files).

    ``options`` are the keyword arguments of the class (e.g. ``allow_clients=True``;
    ``proxy_secret=...`` in proxy mode)."""
    if mode == "jwt":
        return JWTVerifier(endpoint, **options)  # type: ignore[arg-type]
    if mode == "resolver":
        return ResolverClient(endpoint, **options)  # type: ignore[arg-type]
    if mode == "proxy":
        return TrustedProxyHeaders(trusted_proxies=trusted_proxies, **options)  # type: ignore[arg-type]
    raise ConfigurationError(f"unknown mode {mode!r}: jwt, resolver or proxy")
