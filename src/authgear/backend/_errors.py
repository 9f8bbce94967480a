"""The backend's errors. Each knows its HTTP answer (status, headers, JSON body), so that every
adapter sends the same response for it and none of them spells out a status of its own.

    AuthgearError                      (authgear._errors, shared with the client SDK)
    └── BackendError                   500: anything else the backend integration raises
        ├── AuthError                  401/403 with an RFC 6750 challenge
        │   ├── MissingCredentials     401, bare ``Bearer realm="..."``
        │   ├── InvalidToken           401 ``invalid_token``
        │   ├── InsufficientScope      403 ``insufficient_scope`` (+ ``scope=``)
        │   └── CrossOriginRequest     403, a cookie-authenticated unsafe request from elsewhere
        ├── BackendUnavailable         503 + ``Retry-After``: Authgear could not be asked
        └── ConfigurationError         500: the backend is set up wrongly (also a ValueError)
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from authgear._errors import AuthgearError

__all__ = [
    "AuthError",
    "BackendError",
    "BackendUnavailable",
    "ConfigurationError",
    "CrossOriginRequest",
    "InsufficientScope",
    "InvalidToken",
    "MissingCredentials",
]

#: Seconds a client is asked to wait after a 503.
RETRY_AFTER = 5


def _quote(value: str) -> str:
    # RFC 6750 §3: the attribute values use %x20-21 / %x23-5B / %x5D-7E.
    cleaned = "".join(c for c in value if " " <= c <= "~" and c not in '"\\')
    return f'"{cleaned}"'


class BackendError(AuthgearError):
    """Base class of everything ``authgear.backend`` raises; the HTTP answer is on the class."""

    status_code = 500
    error = "server_error"

    def __init__(self, description: str = "the server could not authenticate the request") -> None:
        super().__init__(description)
        self.description = description

    def headers(self, realm: str = "api") -> dict[str, str]:
        """Response headers (``realm`` names the protected area in a challenge)."""
        return {"Cache-Control": "no-store"}

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.public_description()}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()

    def public_description(self) -> str:
        """What the response says; server-side details stay in the logs."""
        return self.description


class AuthError(BackendError):
    """The request is not allowed: 401 (or 403) with an RFC 6750 challenge and a JSON body."""

    status_code = 401
    error = "unauthorized"
    #: The RFC 6750 error code in the challenge (None: a bare ``Bearer realm="..."``).
    challenge_error: str | None = None

    def www_authenticate(self, realm: str = "api") -> str:
        parts = [f"realm={_quote(realm)}"]
        if self.challenge_error:
            parts.append(f"error={_quote(self.challenge_error)}")
            parts.append(f"error_description={_quote(self.description)}")
        return "Bearer " + ", ".join(parts)

    def headers(self, realm: str = "api") -> dict[str, str]:
        return {"WWW-Authenticate": self.www_authenticate(realm), "Cache-Control": "no-store"}


class MissingCredentials(AuthError):
    """No credentials, or not Bearer ones: 401 with a bare ``Bearer realm=...`` challenge."""

    def __init__(self, description: str = "authentication required") -> None:
        super().__init__(description)


class InvalidToken(AuthError):
    """Malformed, expired, revoked, forged or otherwise unacceptable: 401 ``invalid_token``."""

    error = challenge_error = "invalid_token"

    def __init__(self, description: str = "invalid access token") -> None:
        super().__init__(description)


class InsufficientScope(AuthError):
    """Authenticated but lacking a role or scope: 403 ``insufficient_scope``.

    The challenge carries ``scope="..."`` (RFC 6750 §3) whenever scopes were required, so a
    client knows what to ask for; a missing role has no scope to name."""

    status_code = 403
    error = challenge_error = "insufficient_scope"

    def __init__(self, description: str, scopes: Iterable[str] = ()) -> None:
        super().__init__(description)
        self.scopes = tuple(scopes)

    def www_authenticate(self, realm: str = "api") -> str:
        challenge = super().www_authenticate(realm)
        if self.scopes:
            challenge += f", scope={_quote(' '.join(self.scopes))}"
        return challenge


class CrossOriginRequest(AuthError):
    """A state-changing request authenticated by a cookie but not sent by a page of an allowed
    origin (a forged cross-site request): 403, no challenge (another token would not help)."""

    status_code = 403
    error = "cross_origin_request"

    def __init__(
        self, description: str = "a cookie-authenticated request must come from an allowed origin"
    ) -> None:
        super().__init__(description)

    def headers(self, realm: str = "api") -> dict[str, str]:
        return {"Cache-Control": "no-store"}


class BackendUnavailable(BackendError):
    """Authgear could not be asked (no keys yet, resolver down): 503 with ``Retry-After``."""

    status_code = 503
    error = "temporarily_unavailable"

    def __init__(self, description: str = "authentication is temporarily unavailable") -> None:
        super().__init__(description)

    def headers(self, realm: str = "api") -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER), "Cache-Control": "no-store"}

    def public_description(self) -> str:
        return "try again later"


class ConfigurationError(BackendError, ValueError):
    """The backend is set up wrongly (an HMAC algorithm, an issuer mismatch, plain http to a
    remote JWKS): raised at construction, or answered 500 per request until it is fixed, with
    the reason in the log (never in the response)."""

    def public_description(self) -> str:
        return "authentication is misconfigured on this server"
