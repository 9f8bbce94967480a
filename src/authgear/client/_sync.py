"""The synchronous client, :class:`Authgear`: a thin driver of the sans-IO core."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx2

from authgear.client._base import (
    ClientBase,
    OpenBrowser,
    is_replayable,
    network_error,
    open_url,
    to_response,
    transport_errors,
)
from authgear.client._core import (
    DeleteStore,
    Flow,
    HTTPRequest,
    HTTPResponse,
    LoadStore,
    SaveStore,
    is_bearer_challenge,
)
from authgear.client._errors import LoginTimeoutError, NetworkError, OAuthError
from authgear.client._loopback import LoopbackServer
from authgear.client._storage import TokenStorage
from authgear.client._types import AuthenticateResult, UserInfo

__all__ = ["Authgear"]

T = TypeVar("T")

_SEND_KWARGS = ("stream", "auth", "follow_redirects")


class Authgear(ClientBase):
    """The Authgear SDK for synchronous Python.

    ``Authgear(client_id=..., endpoint=...)`` then ``configure()`` (no network call). Safe to
    share between threads: concurrent refreshes become one request, also across processes that
    share the token storage.

    ``http_client`` may be an ``httpx2.Client`` or a plain ``httpx.Client``; it is used for the
    SDK's own requests and by ``fetch``. Without one the SDK makes (and closes) its own.
    """

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
        self._client: Any = http_client if http_client is not None else httpx2.Client(timeout=30.0)
        self._transport_errors = transport_errors(self._client)
        self._lock = threading.Lock()

    # lifecycle

    def close(self) -> None:
        """Close the HTTP client if the SDK created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Authgear:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def http_client(self) -> Any:
        return self._client

    def configure(self) -> None:
        """Read the stored session; no network call. State becomes ``AUTHENTICATED``
        (``FOUND_TOKEN``) or ``NO_SESSION`` (``NO_TOKEN``)."""
        with self._lock:
            self._core.configure(self._storage.load(self._core.name))
            self._configured = True
        self._core.dispatch_events()

    # driving the core

    def _send(self, req: HTTPRequest) -> HTTPResponse:
        try:
            # auth=None: not the client's own auth (an AuthgearAuth there would re-enter)
            r = self._client.request(
                req.method, req.url, headers=list(req.headers), content=req.body, auth=None
            )
        except self._transport_errors as e:
            raise network_error(req, e) from None
        return to_response(r)

    def _perform(self, effect: object) -> Any:
        if isinstance(effect, HTTPRequest):
            return self._send(effect)
        if isinstance(effect, LoadStore):
            return self._storage.load(self._core.name)
        if isinstance(effect, SaveStore):
            self._storage.save(self._core.name, effect.record)
            return None
        if isinstance(effect, DeleteStore):
            self._storage.delete(self._core.name)
            return None
        raise TypeError(f"unknown effect {effect!r}")

    def _run(self, flow: Flow[T]) -> T:
        value: Any = None
        error: NetworkError | None = None
        try:
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
                error = None
                try:
                    value = self._perform(effect)
                except NetworkError as e:
                    error, value = e, None
        finally:
            flow.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold this instance's thread lock, then the storage's (cross-process) lock."""
        with self._lock:
            lock = self._storage.lock(self._core.name)
            lock.acquire()
            try:
                yield
            finally:
                lock.release()

    def _run_locked(self, flow: Flow[T]) -> T:
        with self._locked():
            return self._run(flow)

    # the seed's API

    def refresh_access_token_if_needed(self) -> str | None:
        """Refresh the access token when it is missing or past 0.9 x its lifetime, and return
        it (``None`` without a session). Concurrent callers share one refresh.

        A refresh token the server no longer accepts clears the session (``NO_SESSION``,
        reason ``INVALID``) without raising; network errors, 5xx and 429 raise
        :class:`TransientError` and keep the session."""
        self._require_configured()
        try:
            if self._core.needs_refresh():
                with self._locked():
                    if self._core.needs_refresh():
                        self._run(self._core.refresh_flow())
        finally:
            self._core.dispatch_events()
        return self._core.access_token

    def refresh_access_token(self) -> str | None:
        """Refresh now, because the current access token was refused. Callers that hold the
        same refused token concurrently still cause one refresh."""
        self._core.mark_rejected(self._core.access_token)
        return self.refresh_access_token_if_needed()

    def _refresh_rejected(self, token: str) -> str | None:
        self._core.mark_rejected(token)
        return self.refresh_access_token_if_needed()

    def fetch_user_info(self) -> UserInfo:
        """Refresh if needed, then GET the userinfo endpoint. A 401 ``invalid_grant`` clears
        the session (``INVALID``) and raises :class:`OAuthError`."""
        self.refresh_access_token_if_needed()
        session = self._core.session
        try:
            return self._run(self._core.userinfo_flow())
        except OAuthError as e:
            if e.error == "invalid_grant" and session is not None:
                self._run_locked(self._core.invalidate_flow(session.refresh_token))
            raise
        finally:
            self._core.dispatch_events()

    def fetch(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send a request with ``Authorization: Bearer <access token>`` (refreshed if needed)
        through the HTTP client, and return its ``Response``. Keyword arguments are those of
        ``httpx2.Client.request``. Without a session the request is sent without the header.

        Beyond the official SDKs: on a 401 with a Bearer challenge, if the body can be sent
        again, refresh once and retry once; if the refresh token is refused as well the session
        becomes ``NO_SESSION`` and the 401 is returned."""
        send_kwargs = {k: kwargs.pop(k) for k in _SEND_KWARGS if k in kwargs}
        send_kwargs.setdefault("auth", None)  # the client's own auth must not replace ours
        request = self._client.build_request(method, url, **kwargs)
        token = self.refresh_access_token_if_needed()
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = self._client.send(request, **send_kwargs)
        if (
            token is not None
            and is_bearer_challenge(response.status_code, response.headers.get("www-authenticate"))
            and is_replayable(request)
        ):
            try:
                new = self._refresh_rejected(token)
            except BaseException:
                response.close()
                raise
            if new is not None and new != token:
                response.close()
                request.headers["Authorization"] = f"Bearer {new}"
                response = self._client.send(request, **send_kwargs)
        return response

    def clear_session_state(self) -> None:
        """Forget the session locally (no network): ``NO_SESSION``, reason ``CLEAR``."""
        self._require_configured()
        try:
            self._run_locked(self._core.clear_flow())
        finally:
            self._core.dispatch_events()

    def logout(self, *, force: bool = False) -> None:
        """Revoke the refresh token at the server, then clear the session (``LOGOUT``).
        With ``force=True`` the session is cleared even when revocation fails."""
        self._require_configured()
        try:
            self._run_locked(self._core.logout_flow(force))
        finally:
            self._core.dispatch_events()

    # authentication

    def make_authorize_url(
        self,
        redirect_uri: str,
        *,
        page: str | None = None,
        prompt: str | list[str] | None = None,
        login_hint: str | None = None,
        ui_locales: str | list[str] | None = None,
        state: str | None = None,
        extra_params: dict[str, str] | None = None,
    ) -> str:
        """The authorization URL to open in a browser (PKCE S256, state, nonce). Pass the URL
        the browser is redirected back to to :meth:`finish_authentication`."""
        self._require_configured()
        url, pending = self._run(
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
        with self._pending_lock:
            self._pending[pending.state] = pending
        return url

    def finish_authentication(self, callback_url: str) -> AuthenticateResult:
        """Check the redirect (state, error), exchange the code, verify the ID token against
        the JWKS, store the session: ``AUTHENTICATED`` (reason ``AUTHENTICATED``)."""
        self._require_configured()
        params = self._core.parse_callback(callback_url)
        with self._pending_lock:
            pending = self._core.check_state(self._pending, params)
            del self._pending[pending.state]
        try:
            return self._run_locked(self._core.finish_flow(pending, params))
        finally:
            self._core.dispatch_events()

    def authenticate(
        self,
        *,
        page: str | None = None,
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
        self._require_configured()
        server = LoopbackServer.for_redirect_uri(redirect_uri)
        server.start()
        self._loopbacks.add(server)
        try:
            url = self.make_authorize_url(
                server.redirect_uri,
                page=page,
                prompt=prompt,
                login_hint=login_hint,
                ui_locales=ui_locales,
            )
            server.expected_state = dict(parse_qsl(urlsplit(url).query)).get("state")
            open_url(url, open_browser)
            try:
                callback = server.callback.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                raise LoginTimeoutError(
                    f"sign-in did not finish within {timeout:g} seconds"
                ) from None
            try:
                result = self.finish_authentication(callback)
            except Exception as e:
                server.finish(False, f"{type(e).__name__}: {e}")
                raise
            server.finish(True, "You can close this window and return to the application.")
            return result
        finally:
            self._loopbacks.discard(server)
            server.close()
