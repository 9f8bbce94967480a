"""The asyncio client, :class:`AsyncAuthgear`: the same core, driven without blocking the loop."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from authgear.client._storage import StorageLock, TokenStorage
from authgear.client._types import AuthenticateResult, SessionStateChange, UserInfo

__all__ = ["AsyncAuthgear"]

T = TypeVar("T")

logger = logging.getLogger("authgear.client")

_SEND_KWARGS = ("stream", "auth", "follow_redirects")


async def _acquire(lock: StorageLock) -> None:
    """Acquire a storage lock without blocking the event loop (poll with backoff)."""
    delay = 0.001
    while not lock.acquire(blocking=False):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


class AsyncAuthgear(ClientBase):
    """The Authgear SDK for asyncio: same API as :class:`Authgear`, awaitable.

    Concurrent tasks refreshing at once share one request (one ``asyncio.Lock`` per event
    loop, then the storage lock, acquired by polling so the loop never blocks). Storage reads
    and writes under the lock run in a worker thread.

    ``http_client`` may be an ``httpx2.AsyncClient`` or a plain ``httpx.AsyncClient``.
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
        self._client: Any = (
            http_client if http_client is not None else httpx2.AsyncClient(timeout=30.0)
        )
        self._transport_errors = transport_errors(self._client)
        self._alocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._refreshes: set[asyncio.Future[None]] = set()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncAuthgear:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def http_client(self) -> Any:
        return self._client

    async def configure(self) -> None:
        """Read the stored session (in a worker thread); no network call."""
        record = await asyncio.to_thread(self._storage.load, self._core.name)
        self._core.configure(record)
        self._configured = True
        self._core.dispatch_events()

    async def session_state_changes(self) -> AsyncIterator[SessionStateChange]:
        """``async for change in client.session_state_changes(): ...`` -- every state change
        from now on, until the loop breaks."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[SessionStateChange] = asyncio.Queue()

        def listener(change: SessionStateChange) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, change)

        remove = self.on_session_state_change(listener)
        try:
            while True:
                yield await queue.get()
        finally:
            remove()

    # driving the core

    async def _send(self, req: HTTPRequest) -> HTTPResponse:
        try:
            # auth=None: not the client's own auth (an AuthgearAuth there would re-enter)
            r = await self._client.request(
                req.method, req.url, headers=list(req.headers), content=req.body, auth=None
            )
        except self._transport_errors as e:
            raise network_error(req, e) from None
        return to_response(r)

    async def _perform(self, effect: object) -> Any:
        if isinstance(effect, HTTPRequest):
            return await self._send(effect)
        name = self._core.name
        if isinstance(effect, LoadStore):
            return await asyncio.to_thread(self._storage.load, name)
        if isinstance(effect, SaveStore):
            await asyncio.to_thread(self._storage.save, name, effect.record)
            return None
        if isinstance(effect, DeleteStore):
            await asyncio.to_thread(self._storage.delete, name)
            return None
        raise TypeError(f"unknown effect {effect!r}")

    async def _run(self, flow: Flow[T]) -> T:
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
                    value = await self._perform(effect)
                except NetworkError as e:
                    error, value = e, None
        finally:
            flow.close()

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._alocks.get(loop)
        if lock is None:
            lock = self._alocks[loop] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        async with self._loop_lock():
            lock = self._storage.lock(self._core.name)
            await _acquire(lock)
            try:
                yield
            finally:
                lock.release()

    async def _run_locked(self, flow: Flow[T]) -> T:
        async with self._locked():
            return await self._run(flow)

    # the seed's API

    async def refresh_access_token_if_needed(self) -> str | None:
        """See :meth:`Authgear.refresh_access_token_if_needed`."""
        self._require_configured()
        try:
            if self._core.needs_refresh():
                await self._refresh_locked()
        finally:
            self._core.dispatch_events()
        return self._core.access_token

    async def _refresh_locked(self) -> None:
        """Take the locks, then refresh in a task of its own that a cancellation of the
        caller does not stop: once the request is sent, the server may have rotated the
        refresh token, and dropping its answer would lose the session for every holder of
        the store. That task keeps the locks until the new record is stored."""
        loop_lock = self._loop_lock()
        await loop_lock.acquire()
        try:
            storage_lock = self._storage.lock(self._core.name)
            await _acquire(storage_lock)
        except BaseException:
            loop_lock.release()
            raise

        async def critical() -> None:
            try:
                if self._core.needs_refresh():
                    await self._run(self._core.refresh_flow())
            finally:
                storage_lock.release()
                loop_lock.release()

        task = asyncio.ensure_future(critical())
        self._refreshes.add(task)  # a strong reference while it runs
        task.add_done_callback(self._refreshes.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._after_abandoned_refresh)
            raise

    def _after_abandoned_refresh(self, task: asyncio.Future[None]) -> None:
        """A refresh whose caller was cancelled finished: tell the listeners, log its error
        (there is no one else to give it to)."""
        self._core.dispatch_events()
        if not task.cancelled() and task.exception() is not None:
            logger.warning("a refresh whose caller was cancelled failed: %r", task.exception())

    async def refresh_access_token(self) -> str | None:
        """See :meth:`Authgear.refresh_access_token`."""
        self._core.mark_rejected(self._core.access_token)
        return await self.refresh_access_token_if_needed()

    async def _refresh_rejected(self, token: str) -> str | None:
        self._core.mark_rejected(token)
        return await self.refresh_access_token_if_needed()

    async def fetch_user_info(self) -> UserInfo:
        """See :meth:`Authgear.fetch_user_info`."""
        await self.refresh_access_token_if_needed()
        session = self._core.session
        try:
            return await self._run(self._core.userinfo_flow())
        except OAuthError as e:
            if e.error == "invalid_grant" and session is not None:
                await self._run_locked(self._core.invalidate_flow(session.refresh_token))
            raise
        finally:
            self._core.dispatch_events()

    async def fetch(self, method: str, url: str, **kwargs: Any) -> Any:
        """See :meth:`Authgear.fetch`."""
        send_kwargs = {k: kwargs.pop(k) for k in _SEND_KWARGS if k in kwargs}
        send_kwargs.setdefault("auth", None)  # the client's own auth must not replace ours
        request = self._client.build_request(method, url, **kwargs)
        token = await self.refresh_access_token_if_needed()
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = await self._client.send(request, **send_kwargs)
        if (
            token is not None
            and is_bearer_challenge(response.status_code, response.headers.get("www-authenticate"))
            and is_replayable(request)
        ):
            try:
                new = await self._refresh_rejected(token)
            except BaseException:
                await response.aclose()
                raise
            if new is not None and new != token:
                await response.aclose()
                request.headers["Authorization"] = f"Bearer {new}"
                response = await self._client.send(request, **send_kwargs)
        return response

    async def clear_session_state(self) -> None:
        """See :meth:`Authgear.clear_session_state`."""
        self._require_configured()
        try:
            await self._run_locked(self._core.clear_flow())
        finally:
            self._core.dispatch_events()

    async def logout(self, *, force: bool = False) -> None:
        """See :meth:`Authgear.logout`."""
        self._require_configured()
        try:
            await self._run_locked(self._core.logout_flow(force))
        finally:
            self._core.dispatch_events()

    # authentication

    async def make_authorize_url(
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
        """See :meth:`Authgear.make_authorize_url`."""
        self._require_configured()
        url, pending = await self._run(
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

    async def finish_authentication(self, callback_url: str) -> AuthenticateResult:
        """See :meth:`Authgear.finish_authentication`."""
        self._require_configured()
        params = self._core.parse_callback(callback_url)
        with self._pending_lock:
            pending = self._core.check_state(self._pending, params)
            del self._pending[pending.state]
        try:
            return await self._run_locked(self._core.finish_flow(pending, params))
        finally:
            self._core.dispatch_events()

    async def authenticate(
        self,
        *,
        page: str | None = None,
        prompt: str | list[str] | None = None,
        login_hint: str | None = None,
        ui_locales: str | list[str] | None = None,
        open_browser: OpenBrowser = True,
        timeout: float | None = 300.0,  # noqa: ASYNC109 - same API as Authgear
        redirect_uri: str | None = None,
    ) -> AuthenticateResult:
        """See :meth:`Authgear.authenticate`. Cancelling the task closes the listener and
        raises ``asyncio.CancelledError`` as usual."""
        self._require_configured()
        server = LoopbackServer.for_redirect_uri(redirect_uri)
        server.start()
        self._loopbacks.add(server)
        try:
            url = await self.make_authorize_url(
                server.redirect_uri,
                page=page,
                prompt=prompt,
                login_hint=login_hint,
                ui_locales=ui_locales,
            )
            server.expected_state = dict(parse_qsl(urlsplit(url).query)).get("state")
            if callable(open_browser):
                open_url(url, open_browser)
            else:
                await asyncio.to_thread(open_url, url, open_browser)
            try:
                callback = await asyncio.wait_for(
                    asyncio.shield(asyncio.wrap_future(server.callback)), timeout
                )
            except TimeoutError:
                raise LoginTimeoutError(
                    f"sign-in did not finish within {timeout:g} seconds"
                ) from None
            try:
                result = await self.finish_authentication(callback)
            except Exception as e:
                server.finish(False, f"{type(e).__name__}: {e}")
                raise
            server.finish(True, "You can close this window and return to the application.")
            return result
        finally:
            self._loopbacks.discard(server)
            server.close()
