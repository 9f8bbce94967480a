"""What the sync and async clients share besides the core: properties, listeners, browser."""

from __future__ import annotations

import contextlib
import sys
import threading
import webbrowser
from collections.abc import Callable
from typing import Any

from authgear.client._core import DEFAULT_SCOPES, HTTPRequest, HTTPResponse, SessionCore
from authgear.client._errors import NetworkError, NotConfiguredError
from authgear.client._loopback import LoopbackServer
from authgear.client._storage import FileTokenStorage, TokenStorage
from authgear.client._types import SessionState, SessionStateChange, SessionStateChangeReason

OpenBrowser = bool | Callable[[str], object]


def transport_errors(client: object) -> tuple[type[BaseException], ...]:
    """The exception classes meaning "no response" for an httpx2 or httpx client."""
    import httpx2

    errors: list[type[BaseException]] = [httpx2.TransportError]
    module = type(client).__module__.split(".")[0]
    if module == "httpx":
        import httpx

        errors.append(httpx.TransportError)
    return tuple(errors)


def to_response(r: Any) -> HTTPResponse:
    return HTTPResponse(
        status_code=int(r.status_code),
        headers={k.lower(): v for k, v in r.headers.items()},
        content=bytes(r.content),
    )


def network_error(req: HTTPRequest, exc: BaseException) -> NetworkError:
    from authgear.client._core import strip_query

    return NetworkError(f"{req.method} {strip_query(req.url)} failed: {type(exc).__name__}: {exc}")


def is_replayable(request: Any) -> bool:
    """An httpx request whose body is in memory can be sent twice."""
    try:
        request.content  # noqa: B018 - raises RequestNotRead for streaming bodies
    except Exception:
        return False
    return True


def open_url(url: str, open_browser: OpenBrowser) -> None:
    if callable(open_browser):
        open_browser(url)
        return
    opened = False
    if open_browser:
        with contextlib.suppress(Exception):
            opened = webbrowser.open(url)
    if not opened:
        print(f"Open this URL in a browser to sign in:\n\n    {url}\n", file=sys.stderr, flush=True)


class ClientBase:
    _core: SessionCore
    _storage: TokenStorage

    def __init__(
        self,
        *,
        client_id: str,
        endpoint: str,
        name: str,
        token_storage: TokenStorage | None,
        scopes: tuple[str, ...] | list[str] | None,
    ) -> None:
        self._core = SessionCore(
            client_id,
            endpoint,
            name=name,
            scopes=tuple(scopes) if scopes is not None else DEFAULT_SCOPES,
        )
        self._storage = token_storage if token_storage is not None else FileTokenStorage()
        self._configured = False
        self._pending: dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self._loopbacks: set[LoopbackServer] = set()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(client_id={self._core.client_id!r}, "
            f"endpoint={self._core.endpoint!r}, name={self._core.name!r}, "
            f"session_state={self._core.state.value})"
        )

    @property
    def client_id(self) -> str:
        return self._core.client_id

    @property
    def endpoint(self) -> str:
        return self._core.endpoint

    @property
    def name(self) -> str:
        return self._core.name

    @property
    def token_storage(self) -> TokenStorage:
        return self._storage

    @property
    def session_state(self) -> SessionState:
        """The local view: ``UNKNOWN`` before ``configure()``, then updated by server calls."""
        return self._core.state

    @property
    def session_state_reason(self) -> SessionStateChangeReason | None:
        return self._core.reason

    @property
    def access_token(self) -> str | None:
        """The current access token, or ``None`` without a session. Call
        ``refresh_access_token_if_needed()`` first for one that is not about to expire."""
        return self._core.access_token

    @property
    def id_token(self) -> str | None:
        s = self._core.session
        return s.id_token if s is not None else None

    @property
    def access_token_expires_at(self) -> float | None:
        s = self._core.session
        return s.expires_at if s is not None else None

    def on_session_state_change(
        self, listener: Callable[[SessionStateChange], object]
    ) -> Callable[[], None]:
        """Call ``listener(change)`` on every state change; returns a function that
        unsubscribes. Listener exceptions are logged, never raised."""
        return self._core.add_listener(listener)

    def _require_configured(self) -> None:
        if not self._configured:
            raise NotConfiguredError(f"call configure() on {self!r} first")

    def cancel_authentication(self) -> None:
        """Make a pending ``authenticate()`` (any thread) raise ``CancelError``."""
        for server in list(self._loopbacks):
            server.cancel()
