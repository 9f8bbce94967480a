"""What the sync and async clients share besides the core: properties, listeners, the
browser and device sign-in flows, and the helpers their drivers use (transport errors,
stepping :func:`~authgear.client._core.bearer_flow`, cancellation)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import webbrowser
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authgear.client._core import (
    CAN_REAUTHENTICATE_CLAIM,
    DEFAULT_SCOPES,
    BearerFlow,
    Flow,
    GetToken,
    HTTPResponse,
    SendWithToken,
    SessionCore,
    ShowDeviceCode,
    Sleep,
    strip_query,
)
from authgear.client._errors import CancelError, LoginTimeoutError, NetworkError
from authgear.client._loopback import LoopbackServer
from authgear.client._storage import FileTokenStorage, TokenStorage
from authgear.client._types import (
    AuthenticateResult,
    DeviceAuthorization,
    SessionState,
    SessionStateChange,
    SessionStateChangeReason,
    auth_time_of,
)

OpenBrowser = bool | Callable[[str], object]
# Called with the user code to show; for AsyncAuthgear it may be a coroutine function.
DeviceCodeCallback = Callable[[DeviceAuthorization], object]


def transport_errors(client: object) -> tuple[type[BaseException], ...]:
    """The exception classes meaning "no response" for an httpx2 or httpx client."""
    import httpx2

    errors: list[type[BaseException]] = [httpx2.TransportError]
    if is_plain_httpx(client):
        import httpx

        errors.append(httpx.TransportError)
    return tuple(errors)


def is_plain_httpx(client: object) -> bool:
    return type(client).__module__.split(".")[0] == "httpx"


def to_response(r: Any) -> HTTPResponse:
    return HTTPResponse(
        status_code=int(r.status_code),
        headers={k.lower(): v for k, v in r.headers.items()},
        content=bytes(r.content),
    )


def network_error(method: str, url: str, exc: BaseException) -> NetworkError:
    return NetworkError(f"{method} {strip_query(url)} failed: {type(exc).__name__}: {exc}")


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


def print_device_code(authorization: DeviceAuthorization) -> None:
    """The default ``on_code`` of ``authenticate_device()``: tell the user on stderr."""
    print(
        f"To sign in, open {authorization.verification_uri} on any device and enter the "
        f"code {authorization.user_code}",
        file=sys.stderr,
        flush=True,
    )


class Cancellation:
    """Cancels one device sign-in from any thread (``cancel_authentication()``): wakes a
    blocking :meth:`wait` and an awaiting :meth:`async_wait`, which raise ``CancelError``."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], object]] = []

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            wakers = list(self._wakers)
        for wake in wakers:
            with contextlib.suppress(RuntimeError):  # that event loop is already closed
                wake()

    def wait(self, seconds: float) -> None:
        if self._event.wait(seconds):
            raise CancelError("authentication was cancelled")

    async def async_wait(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not woken.done():
                woken.set_result(None)

        def wake() -> None:
            loop.call_soon_threadsafe(resolve)

        with self._lock:
            cancelled = self._event.is_set()
            self._wakers.append(wake)
        try:
            if not cancelled:
                try:
                    await asyncio.wait_for(woken, seconds)
                except TimeoutError:
                    return
        finally:
            with self._lock:
                self._wakers.remove(wake)
        raise CancelError("authentication was cancelled")


def login_timeout(timeout: float | None) -> LoginTimeoutError:
    return LoginTimeoutError(f"sign-in did not finish within {timeout:g} seconds")


# --- effects of the browser sign-in, on top of the core's ---------------------------------


@dataclass(frozen=True, slots=True)
class OpenURL:
    """Show ``url`` to the user (system browser, printed, or the app's callable)."""

    url: str
    open_browser: OpenBrowser


@dataclass(frozen=True, slots=True)
class WaitCallback:
    """Wait for the loopback redirect; the driver sends back its URL or raises
    ``LoginTimeoutError`` / ``CancelError``."""

    server: LoopbackServer
    timeout: float | None


@dataclass(frozen=True, slots=True)
class CallOnCode:
    """Call the application's ``on_code`` with the user code (awaited if it returns an
    awaitable, in the async driver); its exception ends the sign-in."""

    on_code: DeviceCodeCallback
    authorization: DeviceAuthorization


@dataclass(frozen=True, slots=True)
class WaitOrCancel:
    """The core's :class:`Sleep`, cut short by ``cancel_authentication()``."""

    seconds: float
    cancellation: Cancellation


def with_device_ui(
    flow: Flow[AuthenticateResult], on_code: DeviceCodeCallback, cancellation: Cancellation
) -> Generator[Any, Any, AuthenticateResult]:
    """Run the core's device flow, turning its UI effects into the caller's: the user code
    goes to ``on_code`` and each sleep can be cancelled."""
    value: Any = None
    error: Exception | None = None
    try:
        while True:
            try:
                effect: Any = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                result: AuthenticateResult = stop.value
                return result
            if isinstance(effect, ShowDeviceCode):
                effect = CallOnCode(on_code, effect.authorization)
            elif isinstance(effect, Sleep):
                effect = WaitOrCancel(effect.seconds, cancellation)
            error = None
            try:
                value = yield effect
            except Exception as e:
                error, value = e, None
    finally:
        flow.close()


# --- stepping the one bearer flow -------------------------------------------------------------


def bearer_answer(response: Any) -> tuple[int, str | None]:
    """What :func:`bearer_flow` needs from a response (httpx, httpx2 or requests)."""
    return int(response.status_code), response.headers.get("www-authenticate")


def next_send(
    flow: BearerFlow, value: Any, get_token: Callable[[str | None], str | None]
) -> SendWithToken | None:
    """Advance ``flow`` to its next request, answering its token questions with
    ``get_token(rejected)``; ``None`` when it is done."""
    try:
        effect = flow.send(value)
        while isinstance(effect, GetToken):
            effect = flow.send(get_token(effect.rejected))
    except StopIteration:
        return None
    return effect


async def anext_send(
    flow: BearerFlow, value: Any, get_token: Callable[[str | None], Awaitable[str | None]]
) -> SendWithToken | None:
    """:func:`next_send` for an awaitable ``get_token``."""
    try:
        effect = flow.send(value)
        while isinstance(effect, GetToken):
            effect = flow.send(await get_token(effect.rejected))
    except StopIteration:
        return None
    return effect


class ClientBase:
    _core: SessionCore
    _storage: TokenStorage
    _client: Any

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
        self._loopbacks: set[LoopbackServer] = set()
        self._cancellations: set[Cancellation] = set()
        self._auth: Any = None

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
    def storage_key(self) -> str:
        """Where the session is stored: ``<name>.<digest of endpoint and client id>``, so
        that one name used with two servers keeps two sessions."""
        return self._core.storage_key

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

    @property
    def auth_time(self) -> datetime | None:
        """When the user last signed in (the current ID token's ``auth_time``, UTC), or
        ``None`` without a session or when the server did not say. ``reauthenticate()``
        moves it forward."""
        return auth_time_of(self._core.id_token_claims())

    @property
    def can_reauthenticate(self) -> bool:
        """Whether ``reauthenticate()`` is possible: the current ID token's
        ``https://authgear.com/claims/user/can_reauthenticate`` claim (``False`` without a
        session). ``refresh_id_token()`` brings the claim up to date."""
        return self._core.id_token_claims().get(CAN_REAUTHENTICATE_CLAIM) is True

    def on_session_state_change(
        self, listener: Callable[[SessionStateChange], object]
    ) -> Callable[[], None]:
        """Call ``listener(change)`` on every state change; returns a function that
        unsubscribes. Listener exceptions are logged, never raised."""
        return self._core.add_listener(listener)

    def cancel_authentication(self) -> None:
        """Make a pending ``authenticate()``, ``reauthenticate()`` or
        ``authenticate_device()`` (any thread) raise ``CancelError``."""
        for server in list(self._loopbacks):
            server.cancel()
        for cancellation in list(self._cancellations):
            cancellation.cancel()

    def _fetch_auth(self) -> Any:
        """The adapter ``fetch`` sends through, for this client's httpx flavour."""
        if self._auth is None:
            # adapters imports the shells, so it cannot be imported at the top of this module
            from authgear.client.adapters import auth_for_client

            self._auth = auth_for_client(self, self._client)  # type: ignore[arg-type]
        return self._auth

    def _device_flow(
        self, on_code: DeviceCodeCallback | None
    ) -> Generator[Any, Any, AuthenticateResult]:
        cancellation = Cancellation()
        self._cancellations.add(cancellation)
        try:
            flow = self._core.device_flow()
            return (yield from with_device_ui(flow, on_code or print_device_code, cancellation))
        finally:
            self._cancellations.discard(cancellation)

    def _authenticate_flow(
        self,
        authorize: Callable[[str], Flow[str]],
        *,
        open_browser: OpenBrowser,
        timeout: float | None,
        redirect_uri: str | None,
    ) -> Generator[Any, Any, AuthenticateResult]:
        """Browser sign-in (RFC 8252): listen on the loopback, show the authorization URL
        that ``authorize(redirect_uri)`` makes, wait for the redirect, finish; the browser is
        told whether it worked."""
        core = self._core
        core.require_configured()
        server = LoopbackServer.for_redirect_uri(redirect_uri)
        server.start()
        self._loopbacks.add(server)
        try:
            url = yield from authorize(server.redirect_uri)
            server.expected_state = dict(parse_qsl(urlsplit(url).query)).get("state")
            yield OpenURL(url, open_browser)
            callback: str = yield WaitCallback(server, timeout)
            try:
                result = yield from core.finish_authentication_flow(callback)
            except Exception as e:
                server.finish(False, f"{type(e).__name__}: {e}")
                raise
            server.finish(True, "You can close this window and return to the application.")
            return result
        finally:
            self._loopbacks.discard(server)
            server.close()
