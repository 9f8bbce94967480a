"""Errors of the client SDK. Every failure is one of these; none is a silent ``None``."""

from __future__ import annotations

# One family for the whole distribution: ``except authgear.AuthgearError`` catches the SDK's
# errors and the backend integration's alike.
from authgear._errors import AuthgearError

__all__ = [
    "AccessDeniedError",
    "AuthgearError",
    "CancelError",
    "CannotReauthenticateError",
    "DeviceCodeExpiredError",
    "DeviceFlowUnsupportedError",
    "IDTokenError",
    "KeyringUnavailableError",
    "LoginTimeoutError",
    "NetworkError",
    "NotConfiguredError",
    "OAuthError",
    "ServerError",
    "StateMismatchError",
    "TokenStorageError",
    "TransientError",
]


class NotConfiguredError(AuthgearError):
    """A method that needs the SDK configured was called before ``configure()``."""


class OAuthError(AuthgearError):
    """The server answered with an OAuth 2.0 error (RFC 6749 section 5.2, RFC 6750 section 3)."""

    def __init__(
        self,
        error: str,
        error_description: str | None = None,
        error_uri: str | None = None,
        *,
        status_code: int | None = None,
    ) -> None:
        self.error = error
        self.error_description = error_description
        self.error_uri = error_uri
        self.status_code = status_code
        message = error if not error_description else f"{error}: {error_description}"
        super().__init__(message)

    def __repr__(self) -> str:
        return (
            f"OAuthError(error={self.error!r}, error_description={self.error_description!r}, "
            f"error_uri={self.error_uri!r}, status_code={self.status_code!r})"
        )


class AccessDeniedError(OAuthError):
    """``access_denied``: the user (or the server) refused the sign-in, in the browser or on
    the device verification page."""


class DeviceCodeExpiredError(OAuthError):
    """``expired_token`` (RFC 8628 section 3.5): the device code expired before the user
    approved it. Start again with a new code."""


class ServerError(AuthgearError):
    """The server answered, but not in a way the protocol allows (a non-JSON token response,
    a missing field, a discovery document without endpoints). Retrying will not help."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class TransientError(AuthgearError):
    """A failure worth retrying later: the server is unreachable, timed out, rate limited
    (429) or failed (5xx). The session is kept."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class NetworkError(TransientError):
    """No HTTP response at all: connection refused, DNS failure, timeout, reset."""


class DeviceFlowUnsupportedError(AuthgearError):
    """The server's discovery document has no ``device_authorization_endpoint``: it does not
    offer the device authorization grant (RFC 8628). Sign in through a browser instead."""


class CannotReauthenticateError(AuthgearError):
    """``reauthenticate()`` is not possible: there is no session, or its ID token says the
    user cannot reauthenticate (``https://authgear.com/claims/user/can_reauthenticate`` is
    not ``true``, e.g. a user without a password or passkey). Nothing was sent."""


class CancelError(AuthgearError):
    """The user or the application cancelled an interactive authentication."""


class LoginTimeoutError(AuthgearError, TimeoutError):
    """Interactive authentication did not finish in time."""


class StateMismatchError(AuthgearError):
    """A redirect came back with a ``state`` this SDK did not issue (or already used)."""


class IDTokenError(AuthgearError):
    """The ID token failed verification (signature, issuer, audience, expiry or nonce)."""


class KeyringUnavailableError(AuthgearError):
    """The keyring token storage was chosen but no usable OS keyring backend exists."""


class TokenStorageError(AuthgearError):
    """The token storage cannot be trusted or used: a folder or file owned by someone else or
    writable by others, or a storage lock that another process holds past the timeout."""


_OAUTH_ERRORS: dict[str, type[OAuthError]] = {
    "access_denied": AccessDeniedError,
    "expired_token": DeviceCodeExpiredError,
}


def make_oauth_error(
    error: str,
    error_description: str | None = None,
    error_uri: str | None = None,
    *,
    status_code: int | None = None,
) -> OAuthError:
    """The :class:`OAuthError` for ``error``: a subclass for the errors a caller handles
    on their own (``access_denied``, ``expired_token``)."""
    cls = _OAUTH_ERRORS.get(error, OAuthError)
    return cls(error, error_description, error_uri, status_code=status_code)
