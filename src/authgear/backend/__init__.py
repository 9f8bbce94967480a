"""Backend integration: know who is calling your API, by JWT or by Authgear's resolver.

    from authgear.backend import JWTVerifier, ResolverClient, TrustedProxyHeaders

    verifier = JWTVerifier("https://myapp.authgear.cloud")   # local check, no call per request
    user = verifier.verify(token)                            # or await verifier.verify_async(token)

The core imports no web framework and nothing of ``authgear.server`` or ``authgear.client``.
Adapters: ``authgear.backend.asgi`` (Starlette, FastAPI, any ASGI app),
``authgear.backend.fastapi``, ``authgear.backend.flask``, ``authgear.backend.django``.
See docs/backend.md.
"""

from __future__ import annotations

from authgear.backend._jwt import SUPPORTED_ALGORITHMS, JWTVerifier, parse_jwks, user_from_claims
from authgear.backend._resolver import (
    RESOLVER_HEADERS,
    ResolverClient,
    TrustedProxyHeaders,
    user_from_headers,
)
from authgear.backend._types import (
    AuthenticatedUser,
    Authenticator,
    AuthError,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InsufficientScope,
    InvalidToken,
    MissingCredentials,
    RequestLike,
    SimpleRequest,
    bearer_token,
    require,
)

__all__ = [
    "RESOLVER_HEADERS",
    "SUPPORTED_ALGORITHMS",
    "AuthError",
    "AuthenticatedUser",
    "Authenticator",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "InsufficientScope",
    "InvalidToken",
    "JWTVerifier",
    "MissingCredentials",
    "RequestLike",
    "ResolverClient",
    "SimpleRequest",
    "TrustedProxyHeaders",
    "bearer_token",
    "make_authenticator",
    "parse_jwks",
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
    """Build one authenticator by name: ``jwt``, ``resolver`` or ``proxy`` (for config files)."""
    if mode == "jwt":
        return JWTVerifier(endpoint, **options)  # type: ignore[arg-type]
    if mode == "resolver":
        return ResolverClient(endpoint, **options)  # type: ignore[arg-type]
    if mode == "proxy":
        if not trusted_proxies:
            raise ConfigurationError("proxy mode needs trusted_proxies")
        return TrustedProxyHeaders(trusted_proxies=trusted_proxies)
    raise ConfigurationError(f"unknown mode {mode!r}: jwt, resolver or proxy")
