"""The Authgear client SDK: sign in, keep the session, call your application server.

>>> from authgear import Authgear
>>> authgear = Authgear(client_id="...", endpoint="https://myapp.authgear.cloud")
>>> authgear.configure()                      # no network call
>>> authgear.authenticate()                   # system browser, loopback redirect
>>> authgear.authenticate_device()            # no browser here: a code to enter elsewhere
>>> authgear.reauthenticate()                 # before a sensitive action
>>> authgear.fetch_user_info()
>>> authgear.fetch("GET", "https://api.example.com/me")
"""

from authgear.client._async import AsyncAuthgear
from authgear.client._errors import (
    AccessDeniedError,
    AuthgearError,
    CancelError,
    CannotReauthenticateError,
    DeviceCodeExpiredError,
    DeviceFlowUnsupportedError,
    IDTokenError,
    KeyringUnavailableError,
    LoginTimeoutError,
    NetworkError,
    NotConfiguredError,
    OAuthError,
    ServerError,
    StateMismatchError,
    TokenStorageError,
    TransientError,
)
from authgear.client._storage import (
    FileTokenStorage,
    KeyringTokenStorage,
    MemoryTokenStorage,
    StoredSession,
    TokenStorage,
)
from authgear.client._sync import Authgear
from authgear.client._types import (
    AuthenticateResult,
    DeviceAuthorization,
    OIDCConfiguration,
    Page,
    SessionState,
    SessionStateChange,
    SessionStateChangeReason,
    UserInfo,
)
from authgear.client.adapters import AuthgearAuth, httpx_auth

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
    "httpx_auth",
]
