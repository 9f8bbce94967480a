"""Authgear in Python.

The client SDK's names are importable from here (``from authgear import Authgear``) and from
``authgear.client``; both lists are the same. They are imported on first use, so that
``import authgear.server`` does not load the SDK (and the SDK does not load the server); type
checkers see them through the ``TYPE_CHECKING`` imports below.
"""

from typing import TYPE_CHECKING, Any

from authgear._version import __version__

if TYPE_CHECKING:
    from authgear.client import (
        AccessDeniedError as AccessDeniedError,
    )
    from authgear.client import (
        AsyncAuthgear as AsyncAuthgear,
    )
    from authgear.client import (
        AuthenticateResult as AuthenticateResult,
    )
    from authgear.client import (
        Authgear as Authgear,
    )
    from authgear.client import (
        AuthgearAuth as AuthgearAuth,
    )
    from authgear.client import (
        AuthgearError as AuthgearError,
    )
    from authgear.client import (
        CancelError as CancelError,
    )
    from authgear.client import (
        CannotReauthenticateError as CannotReauthenticateError,
    )
    from authgear.client import (
        DeviceAuthorization as DeviceAuthorization,
    )
    from authgear.client import (
        DeviceCodeExpiredError as DeviceCodeExpiredError,
    )
    from authgear.client import (
        DeviceFlowUnsupportedError as DeviceFlowUnsupportedError,
    )
    from authgear.client import (
        FileTokenStorage as FileTokenStorage,
    )
    from authgear.client import (
        IDTokenError as IDTokenError,
    )
    from authgear.client import (
        KeyringTokenStorage as KeyringTokenStorage,
    )
    from authgear.client import (
        KeyringUnavailableError as KeyringUnavailableError,
    )
    from authgear.client import (
        LoginTimeoutError as LoginTimeoutError,
    )
    from authgear.client import (
        MemoryTokenStorage as MemoryTokenStorage,
    )
    from authgear.client import (
        NetworkError as NetworkError,
    )
    from authgear.client import (
        NotConfiguredError as NotConfiguredError,
    )
    from authgear.client import (
        OAuthError as OAuthError,
    )
    from authgear.client import (
        OIDCConfiguration as OIDCConfiguration,
    )
    from authgear.client import (
        Page as Page,
    )
    from authgear.client import (
        ServerError as ServerError,
    )
    from authgear.client import (
        SessionState as SessionState,
    )
    from authgear.client import (
        SessionStateChange as SessionStateChange,
    )
    from authgear.client import (
        SessionStateChangeReason as SessionStateChangeReason,
    )
    from authgear.client import (
        StateMismatchError as StateMismatchError,
    )
    from authgear.client import (
        StoredSession as StoredSession,
    )
    from authgear.client import (
        TokenStorage as TokenStorage,
    )
    from authgear.client import (
        TokenStorageError as TokenStorageError,
    )
    from authgear.client import (
        TransientError as TransientError,
    )
    from authgear.client import (
        UserInfo as UserInfo,
    )
    from authgear.client import (
        httpx_auth as httpx_auth,
    )

__all__ = [
    "AccessDeniedError",
    "AsyncAuthgear",
    "AuthenticateResult",
    "Authgear",
    "AuthgearAuth",
    "AuthgearError",
    "CancelError",
    "CannotReauthenticateError",
    "DeviceAuthorization",
    "DeviceCodeExpiredError",
    "DeviceFlowUnsupportedError",
    "FileTokenStorage",
    "IDTokenError",
    "KeyringTokenStorage",
    "KeyringUnavailableError",
    "LoginTimeoutError",
    "MemoryTokenStorage",
    "NetworkError",
    "NotConfiguredError",
    "OAuthError",
    "OIDCConfiguration",
    "Page",
    "ServerError",
    "SessionState",
    "SessionStateChange",
    "SessionStateChangeReason",
    "StateMismatchError",
    "StoredSession",
    "TokenStorage",
    "TokenStorageError",
    "TransientError",
    "UserInfo",
    "__version__",
    "httpx_auth",
]

_CLIENT_EXPORTS = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _CLIENT_EXPORTS:
        import authgear.client

        return getattr(authgear.client, name)
    raise AttributeError(f"module 'authgear' has no attribute {name!r}")
