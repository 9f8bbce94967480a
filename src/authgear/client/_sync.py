"""The synchronous client, :class:`Authgear`: a thin shell over the sans-IO core.

:class:`SyncDriver` performs the core's effects (HTTP, storage, locks, the browser); every
public method of :class:`Authgear` is one core flow handed to it.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import httpx2
from typing_extensions import TypeVar as DefaultTypeVar

from authgear.client._base import (
    CallOnCode,
    ClientBase,
    DeviceCodeCallback,
    OpenBrowser,
    OpenURL,
    WaitCallback,
    WaitOrCancel,
    login_timeout,
    network_error,
    open_url,
    to_response,
    transport_errors,
)
from authgear.client._core import (
    USER_AGENT,
    DeleteStore,
    Flow,
    HTTPRequest,
    HTTPResponse,
    LoadStore,
    Locked,
    SaveStore,
    SessionCore,
)
from authgear.client._storage import TokenStorage
from authgear.client._types import AuthenticateResult, Page, UserInfo

if TYPE_CHECKING:
    import httpx

__all__ = ["Authgear", "SyncDriver"]

T = TypeVar("T")
# What ``fetch`` returns: ``httpx2.Response``, or ``httpx.Response`` with a plain httpx client.
ResponseT = DefaultTypeVar("ResponseT", default=httpx2.Response)

_SEND_KWARGS = ("stream", "follow_redirects")


class SyncDriver:
    """Runs core flows with blocking I/O: sends each effect's request or storage call and
    feeds the result (or the exception) back into the flow."""

    def __init__(self, core: SessionCore, storage: TokenStorage, client: Any) -> None:
        self.core = core
        self.storage = storage
        self.client = client
        self.transport_errors = transport_errors(client)
        self.lock = threading.Lock()  # this instance's threads, before the storage lock

    def call(self, flow: Generator[Any, Any, T]) -> T:
        """Run ``flow``, then tell listeners of the state changes it made."""
        try:
            return self.run(flow)
        finally:
            self.core.dispatch_events()

    def run(self, flow: Generator[Any, Any, T]) -> T:
        value: Any = None
        error: Exception | None = None
        try:
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                error = None
                try:
                    value = self.perform(effect)
                except Exception as e:
                    error, value = e, None
        finally:
            flow.close()

    def perform(self, effect: object) -> Any:
        if isinstance(effect, HTTPRequest):
            return self.send(effect)
        if isinstance(effect, LoadStore):
            return self.storage.load(effect.key)
        if isinstance(effect, SaveStore):
            self.storage.save(effect.key, effect.record)
            return None
        if isinstance(effect, DeleteStore):
            self.storage.delete(effect.key)
            return None
        if isinstance(effect, Locked):
            return self.run_locked(effect)
        if isinstance(effect, OpenURL):
            open_url(effect.url, effect.open_browser)
            return None
        if isinstance(effect, WaitCallback):
            try:
                return effect.server.callback.result(timeout=effect.timeout)
            except concurrent.futures.TimeoutError:
                raise login_timeout(effect.timeout) from None
        if isinstance(effect, WaitOrCancel):
            effect.cancellation.wait(effect.seconds)
            return None
        if isinstance(effect, CallOnCode):
            effect.on_code(effect.authorization)
            return None
        raise TypeError(f"unknown effect {effect!r}")

    def send(self, req: HTTPRequest) -> HTTPResponse:
        try:
            # auth=None: not the client's own auth (an AuthgearAuth there would re-enter)
            r = self.client.request(
                req.method, req.url, headers=list(req.headers), content=req.body, auth=None
            )
        except self.transport_errors as e:
            raise network_error(req.method, req.url, e) from None
        return to_response(r)

    def run_locked(self, effect: Locked[T]) -> T:
        """This instance's thread lock, then the storage's (cross-process, finite wait)."""
        with self.lock:
            lock = self.storage.lock(effect.key)
            lock.acquire()
            try:
                return self.run(effect.flow)
            finally:
                lock.release()


class Authgear(ClientBase, Generic[ResponseT]):
    """The Authgear SDK for synchronous Python.

    ``Authgear(client_id=..., endpoint=...)`` then ``configure()`` (no network call). Safe to
    share between threads: concurrent refreshes become one request, also across processes that
    share the token storage.

    ``http_client`` may be an ``httpx2.Client`` or a plain ``httpx.Client``; it is used for the
    SDK's own requests and by ``fetch`` (which returns that library's ``Response``). Without
    one the SDK makes (and closes) its own, sending ``User-Agent: authgear-python/<version>``.
    """

    @overload
    def __init__(
        self: Authgear[httpx2.Response],
        client_id: str,
        endpoint: str,
        *,
        name: str = ...,
        token_storage: TokenStorage | None = ...,
        http_client: httpx2.Client | None = ...,
        scopes: tuple[str, ...] | list[str] | None = ...,
    ) -> None: ...

    @overload
    def __init__(
        self: Authgear[httpx.Response],
        client_id: str,
        endpoint: str,
        *,
        name: str = ...,
        token_storage: TokenStorage | None = ...,
        http_client: httpx.Client,
        scopes: tuple[str, ...] | list[str] | None = ...,
    ) -> None: ...

    def __init__(
        self,
        client_id: str,
        endpoint: str,
        *,
        name: str = "default",
        token_storage: TokenStorage | None = None,
        http_client: Any = None,
        scopes: tuple[str, ...] | list[str] | None = None,
    ) -> None:
        super().__init__(
            client_id=client_id,
            endpoint=endpoint,
            name=name,
            token_storage=token_storage,
            scopes=scopes,
        )
        self._owns_client = http_client is None
        self._client = (
            http_client
            if http_client is not None
            else httpx2.Client(timeout=30.0, headers={"user-agent": USER_AGENT})
        )
        self._driver = SyncDriver(self._core, self._storage, self._client)

    # lifecycle

    def close(self) -> None:
        """Close the HTTP client if the SDK created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Authgear[ResponseT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def http_client(self) -> httpx2.Client | httpx.Client:
        """The HTTP client used for the SDK's requests and by ``fetch``."""
        return self._client  # type: ignore[no-any-return]

    def configure(self) -> None:
        """Read the stored session; no network call. State becomes ``AUTHENTICATED``
        (``FOUND_TOKEN``) or ``NO_SESSION`` (``NO_TOKEN``). A session stored by an earlier
        version under the bare name is moved to :attr:`storage_key` if it was issued by this
        endpoint to this client."""
        self._driver.call(self._core.configure_flow())

    # the seed's API

    def refresh_access_token_if_needed(self) -> str | None:
        """Refresh the access token when it is missing or past 0.9 x its lifetime, and return
        it (``None`` without a session). Concurrent callers share one refresh.

        A refresh token the server no longer accepts clears the session (``NO_SESSION``,
        reason ``INVALID``) without raising; network errors, 5xx and 429 raise
        :class:`TransientError` and keep the session."""
        return self._driver.call(self._core.refresh_if_needed_flow())

    def refresh_access_token(self, *, rejected: str | None = None) -> str | None:
        """Refresh now, because a resource server refused ``rejected`` (default: the current
        access token), and return the new token. Callers that hold the same refused token
        concurrently still cause one refresh; one that comes after the refresh gets the new
        token without another."""
        refused = rejected if rejected is not None else self._core.access_token
        return self._driver.call(self._core.refresh_if_needed_flow(rejected=refused))

    def fetch_user_info(self) -> UserInfo:
        """Refresh if needed, then GET the userinfo endpoint. A 401 ``invalid_grant`` clears
        the session (``INVALID``) and raises :class:`OAuthError`."""
        return self._driver.call(self._core.fetch_user_info_flow())

    def fetch(self, method: str, url: str, **kwargs: Any) -> ResponseT:
        """Send a request with ``Authorization: Bearer <access token>`` (refreshed if needed)
        through the HTTP client, and return its ``Response``. Keyword arguments are those of
        ``httpx2.Client.request`` (not ``auth``). Without a session the request is sent
        without the header. No response at all raises :class:`NetworkError`.

        Beyond the official SDKs: on a 401 with a Bearer challenge, if the body can be sent
        again, refresh once and retry once; if the refresh token is refused as well the session
        becomes ``NO_SESSION`` and the 401 is returned."""
        send_kwargs = {k: kwargs.pop(k) for k in _SEND_KWARGS if k in kwargs}
        request = self._client.build_request(method, url, **kwargs)
        try:
            response: ResponseT = self._client.send(request, auth=self._fetch_auth(), **send_kwargs)
        except self._driver.transport_errors as e:
            raise network_error(method, url, e) from None
        return response

    def clear_session_state(self) -> None:
        """Forget the session locally (no network): ``NO_SESSION``, reason ``CLEAR``."""
        self._driver.call(self._core.clear_flow())

    def logout(self, *, force: bool = False) -> None:
        """Revoke the refresh token at the server, then clear the session (``LOGOUT``).
        With ``force=True`` the session is cleared even when revocation fails."""
        self._driver.call(self._core.logout_flow(force))

    # authentication

    def make_authorize_url(
        self,
        redirect_uri: str,
        *,
        page: Page | None = None,
        prompt: str | list[str] | None = None,
        login_hint: str | None = None,
        ui_locales: str | list[str] | None = None,
        state: str | None = None,
        extra_params: dict[str, str] | None = None,
    ) -> str:
        """The authorization URL to open in a browser (PKCE S256, state, nonce). Pass the URL
        the browser is redirected back to to :meth:`finish_authentication`."""
        return self._driver.call(
            self._core.authorize_flow(
                redirect_uri,
                page=page,
                prompt=prompt,
                login_hint=login_hint,
                ui_locales=ui_locales,
                state=state,
                extra_params=extra_params,
            )
        )

    def finish_authentication(self, callback_url: str) -> AuthenticateResult:
        """Check the redirect (state, error), exchange the code, verify the ID token against
        the JWKS, store the session: ``AUTHENTICATED`` (reason ``AUTHENTICATED``)."""
        return self._driver.call(self._core.finish_authentication_flow(callback_url))

    def authenticate(
        self,
        *,
        page: Page | None = None,
        prompt: str | list[str] | None = None,
        login_hint: str | None = None,
        ui_locales: str | list[str] | None = None,
        open_browser: OpenBrowser = True,
        timeout: float | None = 300.0,
        redirect_uri: str | None = None,
    ) -> AuthenticateResult:
        """Sign in through the system browser (RFC 8252): listen on 127.0.0.1 (a free port
        unless ``redirect_uri`` names one), open the authorization URL (or print it when
        ``open_browser=False`` or no browser exists; a callable gets the URL instead), wait for
        the redirect, finish. Raises :class:`LoginTimeoutError` after ``timeout`` seconds and
        :class:`CancelError` after :meth:`cancel_authentication`."""

        def authorize(uri: str) -> Flow[str]:
            return self._core.authorize_flow(
                uri, page=page, prompt=prompt, login_hint=login_hint, ui_locales=ui_locales
            )

        return self._driver.call(
            self._authenticate_flow(
                authorize, open_browser=open_browser, timeout=timeout, redirect_uri=redirect_uri
            )
        )

    def reauthenticate(
        self,
        *,
        max_age: int = 0,
        prompt: str | list[str] | None = None,
        ui_locales: str | list[str] | None = None,
        open_browser: OpenBrowser = True,
        timeout: float | None = 300.0,
        redirect_uri: str | None = None,
    ) -> AuthenticateResult:
        """Ask the signed-in user to sign in again before a sensitive action, through the
        system browser like :meth:`authenticate` (Authgear's ``startReauthentication``):
        sends ``max_age`` (default 0: always ask) and the current ID token as
        ``id_token_hint`` (refreshed first when past its 5-minute lifetime), no
        ``offline_access``. The new ID token must be for the same user, with an ``auth_time``
        no older than the request minus ``max_age``; only the ID token is replaced (the
        refresh token and the session stay), so :attr:`auth_time` moves forward.

        Raises :class:`CannotReauthenticateError` without opening anything when there is
        no session or :attr:`can_reauthenticate` is false; :class:`IDTokenError` when the
        answer is for another user or shows no new sign-in (the session is unchanged)."""

        def authorize(uri: str) -> Flow[str]:
            return self._core.reauthorize_flow(
                uri, max_age=max_age, prompt=prompt, ui_locales=ui_locales
            )

        return self._driver.call(
            self._authenticate_flow(
                authorize, open_browser=open_browser, timeout=timeout, redirect_uri=redirect_uri
            )
        )

    def make_reauthenticate_url(
        self,
        redirect_uri: str,
        *,
        max_age: int = 0,
        prompt: str | list[str] | None = None,
        ui_locales: str | list[str] | None = None,
        state: str | None = None,
    ) -> str:
        """The first half of :meth:`reauthenticate` for apps that own their redirect; pass
        the redirect to :meth:`finish_authentication`, which then checks and stores it as a
        reauthentication."""
        return self._driver.call(
            self._core.reauthorize_flow(
                redirect_uri, max_age=max_age, prompt=prompt, ui_locales=ui_locales, state=state
            )
        )

    def refresh_id_token(self) -> None:
        """Get a new ID token now (a refresh grant), so that :attr:`can_reauthenticate` and
        the other claims are up to date (Authgear's ``refreshIDToken``)."""
        self._driver.call(self._core.refresh_id_token_flow())

    def authenticate_device(self, on_code: DeviceCodeCallback | None = None) -> AuthenticateResult:
        """Sign in on another device (RFC 8628), for machines without a browser: gets a
        device code, calls ``on_code`` with a :class:`DeviceAuthorization` (``user_code``,
        ``verification_uri``, ``verification_uri_complete``, ``expires_at``, ``interval``;
        the default prints them on stderr), then polls until the user approves, and stores
        the session like :meth:`authenticate`.

        Raises :class:`AccessDeniedError` when the user denies, :class:`DeviceCodeExpiredError`
        when the code expires first, :class:`CancelError` after :meth:`cancel_authentication`
        (from another thread or a signal handler), :class:`DeviceFlowUnsupportedError` when
        the server has no device authorization endpoint."""
        return self._driver.call(self._device_flow(on_code))
