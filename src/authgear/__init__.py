"""Authgear in Python."""

from typing import Any

from authgear._version import __version__

# The client SDK's public names, imported on first use so that `import authgear.server`
# does not load the SDK (and the SDK does not load the server).
_CLIENT_EXPORTS = frozenset(
    {
        "AsyncAuthgear",
        "AuthenticateResult",
        "Authgear",
        "AuthgearAuth",
        "AuthgearError",
        "CancelError",
        "FileTokenStorage",
        "IDTokenError",
        "KeyringTokenStorage",
        "KeyringUnavailableError",
        "LoginTimeoutError",
        "MemoryTokenStorage",
        "NetworkError",
        "NotConfiguredError",
        "OAuthError",
        "ServerError",
        "SessionState",
        "SessionStateChange",
        "SessionStateChangeReason",
        "StateMismatchError",
        "TransientError",
        "UserInfo",
    }
)

__all__ = ["__version__", *sorted(_CLIENT_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _CLIENT_EXPORTS:
        import authgear.client

        return getattr(authgear.client, name)
    raise AttributeError(f"module 'authgear' has no attribute {name!r}")
