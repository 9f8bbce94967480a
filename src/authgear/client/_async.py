"""The asyncio client, :class:`AsyncAuthgear`: the same core, driven without blocking the loop.

:class:`AsyncDriver` performs the core's effects (HTTP, storage in a worker thread, locks,
the browser); every coroutine method of :class:`AsyncAuthgear` is one core flow handed to it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Generator
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
from authgear.client._errors import TokenStorageError
from authgear.client._storage import StorageLock, TokenStorage
from authgear.client._types import AuthenticateResult, Page, SessionStateChange, UserInfo

if TYPE_CHECKING:
    import httpx

__all__ = ["AsyncAuthgear", "AsyncDriver"]

logger = logging.getLogger("authgear.client")

T = TypeVar("T")
# What ``fetch`` returns: ``httpx2.Response``, or ``httpx.Response`` with a plain httpx client.
ResponseT = DefaultTypeVar("ResponseT", default=httpx2.Response)

_SEND_KWARGS = ("stream", "follow_redirects")


async def _acquire(lock: StorageLock) -> None:
    """Acquire a storage lock without blocking the event loop (poll with backoff), giving
    up after the lock's ``timeout`` like a blocking acquire would."""
    loop = asyncio.get_running_loop()
    timeout: float | None = getattr(lock, "timeout", None)
    deadline = None if timeout is None else loop.time() + timeout
    delay = 0.001
    while not lock.acquire(blocking=False):
        if deadline is not None and loop.time() >= deadline:
            make_error = getattr(lock, "timeout_error", None)
            if callable(make_error):
                raise make_error()
            raise TokenStorageError(f"the token storage lock was not released in {timeout:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


class AsyncDriver:
    """Runs core flows on an event loop: awaits each effect's request, runs storage calls in
    a worker thread, and feeds the result (or the exception) back into the flow."""

    def __init__(self, core: SessionCore, storage: TokenStorage, client: Any) -> None:
        self.core = core
        self.storage = storage
        self.client = client
        self.transport_errors = transport_errors(client)
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._critical: set[asyncio.Future[Any]] = set()

    async def call(self, flow: Generator[Any, Any, T]) -> T:
        """Run ``flow``, then tell listeners of the state changes it made."""
        try:
            return await self.run(flow)
        finally:
            self.core.dispatch_events()

    async def run(self, flow: Generator[Any, Any, T]) -> T:
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
                    value = await self.perform(effect)
                except Exception as e:
                    error, value = e, None
        finally:
            flow.close()

    async def perform(self, effect: object) -> Any:
        if isinstance(effect, HTTPRequest):
            return await self.send(effect)
        if isinstance(effect, LoadStore):
            return await asyncio.to_thread(self.storage.load, effect.key)
        if isinstance(effect, SaveStore):
            await asyncio.to_thread(self.storage.save, effect.key, effect.record)
            return None
        if isinstance(effect, DeleteStore):
            await asyncio.to_thread(self.storage.delete, effect.key)
            return None
        if isinstance(effect, Locked):
            return await self.run_locked(effect)
        if isinstance(effect, OpenURL):
            if callable(effect.open_browser):
                open_url(effect.url, effect.open_browser)
            else:
                await asyncio.to_thread(open_url, effect.url, effect.open_browser)
            return None
        if isinstance(effect, WaitCallback):
            future = asyncio.shield(asyncio.wrap_future(effect.server.callback))
            try:
                return await asyncio.wait_for(future, effect.timeout)
            except TimeoutError:
                raise login_timeout(effect.timeout) from None
        if isinstance(effect, WaitOrCancel):
            await effect.cancellation.async_wait(effect.seconds)
            return None
        if isinstance(effect, CallOnCode):
            result = effect.on_code(effect.authorization)
            if inspect.isawaitable(result):
                await result
            return None
        raise TypeError(f"unknown effect {effect!r}")

    async def send(self, req: HTTPRequest) -> HTTPResponse:
        try:
            # auth=None: not the client's own auth (an AuthgearAuth there would re-enter)
            r = await self.client.request(
                req.method, req.url, headers=list(req.headers), content=req.body, auth=None
            )
        except self.transport_errors as e:
            raise network_error(req.method, req.url, e) from None
        return to_response(r)

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._loop_locks.get(loop)
        if lock is None:
            lock = self._loop_locks[loop] = asyncio.Lock()
        return lock

    async def run_locked(self, effect: Locked[T]) -> T:
        """Take this loop's lock, then the storage lock (polled), then run the flow in a task
        of its own that a cancellation of the caller does not stop: once a refresh or a code
        exchange is sent, the server may have rotated the session, and dropping its answer
        would lose the session for every holder of the store. That task keeps the locks
        until the flow is done."""
        loop_lock = self._loop_lock()
        await loop_lock.acquire()
        try:
            storage_lock = self.storage.lock(effect.key)
            await _acquire(storage_lock)
        except BaseException:
            loop_lock.release()
            raise

        async def critical() -> T:
            try:
                return await self.run(effect.flow)
            finally:
                storage_lock.release()
                loop_lock.release()

        task = asyncio.ensure_future(critical())
        self._critical.add(task)  # a strong reference while it runs
        task.add_done_callback(self._critical.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._after_abandoned)
            raise

    def _after_abandoned(self, task: asyncio.Future[Any]) -> None:
        """A locked flow whose caller was cancelled finished: tell the listeners, log its
        error (there is no one else to give it to)."""
        self.core.dispatch_events()
        if not task.cancelled() and task.exception() is not None:
            logger.warning("a refresh whose caller was cancelled failed: %r", task.exception())


class AsyncAuthgear(ClientBase, Generic[ResponseT]):
    """The Authgear SDK for asyncio: the same API as :class:`Authgear`, where every method
    that may touch the network or the storage is a coroutine (``await`` it):
    ``configure``, ``refresh_access_token_if_needed``, ``refresh_access_token``,
    ``fetch_user_info``, ``fetch``, ``clear_session_state``, ``logout``,
    ``make_authorize_url``, ``finish_authentication``, ``authenticate`` and ``aclose``.
    Properties, ``on_session_state_change`` and ``cancel_authentication`` are plain.

    Concurrent tasks refreshing at once share one request (one ``asyncio.Lock`` per event
    loop, then the storage lock, acquired by polling so the loop never blocks). Storage reads
    and writes run in a worker thread.

    ``http_client`` may be an ``httpx2.AsyncClient`` or a plain ``httpx.AsyncClient``.
    """

    @overload
    def __init__(
        self: AsyncAuthgear[httpx2.Response],
        client_id: str,
        endpoint: str,
        *,
        name: str = ...,
        token_storage: TokenStorage | None = ...,
        http_client: httpx2.AsyncClient | None = ...,
        scopes: tuple[str, ...] | list[str] | None = ...,
    ) -> None: ...

    @overload
    def __init__(
        self: AsyncAuthgear[httpx.Response],
        client_id: str,
        endpoint: str,
        *,
        name: str = ...,
        token_storage: TokenStorage | None = ...,
        http_client: httpx.AsyncClient,
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
            else httpx2.AsyncClient(timeout=30.0, headers={"user-agent": USER_AGENT})
        )
        self._driver = AsyncDriver(self._core, self._storage, self._client)

    # lifecycle

    async def aclose(self) -> None:
        """Coroutine. Close the HTTP client if the SDK created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncAuthgear[ResponseT]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def http_client(self) -> httpx2.AsyncClient | httpx.AsyncClient:
        """The HTTP client used for the SDK's requests and by ``fetch``."""
        return self._client  # type: ignore[no-any-return]

    async def configure(self) -> None:
        """Coroutine. Read the stored session (in a worker thread); no network call. See
        :meth:`Authgear.configure`."""
        await self._driver.call(self._core.configure_flow())

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

    # the seed's API

    async def refresh_access_token_if_needed(self) -> str | None:
        """Coroutine. See :meth:`Authgear.refresh_access_token_if_needed`."""
        return await self._driver.call(self._core.refresh_if_needed_flow())

    async def refresh_access_token(self, *, rejected: str | None = None) -> str | None:
        """Coroutine. See :meth:`Authgear.refresh_access_token`."""
        refused = rejected if rejected is not None else self._core.access_token
        return await self._driver.call(self._core.refresh_if_needed_flow(rejected=refused))

    async def fetch_user_info(self) -> UserInfo:
        """Coroutine. See :meth:`Authgear.fetch_user_info`."""
        return await self._driver.call(self._core.fetch_user_info_flow())

    async def fetch(self, method: str, url: str, **kwargs: Any) -> ResponseT:
        """Coroutine. See :meth:`Authgear.fetch`."""
        send_kwargs = {k: kwargs.pop(k) for k in _SEND_KWARGS if k in kwargs}
        request = self._client.build_request(method, url, **kwargs)
        try:
            response: ResponseT = await self._client.send(
                request, auth=self._fetch_auth(), **send_kwargs
            )
        except self._driver.transport_errors as e:
            raise network_error(method, url, e) from None
        return response

    async def clear_session_state(self) -> None:
        """Coroutine. See :meth:`Authgear.clear_session_state`."""
        await self._driver.call(self._core.clear_flow())

    async def logout(self, *, force: bool = False) -> None:
        """Coroutine. See :meth:`Authgear.logout`."""
        await self._driver.call(self._core.logout_flow(force))

    # authentication

    async def make_authorize_url(
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
        """Coroutine. See :meth:`Authgear.make_authorize_url`."""
        return await self._driver.call(
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

    async def finish_authentication(self, callback_url: str) -> AuthenticateResult:
        """Coroutine. See :meth:`Authgear.finish_authentication`."""
        return await self._driver.call(self._core.finish_authentication_flow(callback_url))

    async def authenticate(
        self,
        *,
        page: Page | None = None,
        prompt: str | list[str] | None = None,
        login_hint: str | None = None,
        ui_locales: str | list[str] | None = None,
        open_browser: OpenBrowser = True,
        timeout: float | None = 300.0,  # noqa: ASYNC109 - same API as Authgear
        redirect_uri: str | None = None,
    ) -> AuthenticateResult:
        """Coroutine. See :meth:`Authgear.authenticate`. Cancelling the task closes the
        listener and raises ``asyncio.CancelledError`` as usual."""

        def authorize(uri: str) -> Flow[str]:
            return self._core.authorize_flow(
                uri, page=page, prompt=prompt, login_hint=login_hint, ui_locales=ui_locales
            )

        return await self._driver.call(
            self._authenticate_flow(
                authorize, open_browser=open_browser, timeout=timeout, redirect_uri=redirect_uri
            )
        )

    async def reauthenticate(
        self,
        *,
        max_age: int = 0,
        prompt: str | list[str] | None = None,
        ui_locales: str | list[str] | None = None,
        open_browser: OpenBrowser = True,
        timeout: float | None = 300.0,  # noqa: ASYNC109 - same API as Authgear
        redirect_uri: str | None = None,
    ) -> AuthenticateResult:
        """Coroutine. See :meth:`Authgear.reauthenticate`."""

        def authorize(uri: str) -> Flow[str]:
            return self._core.reauthorize_flow(
                uri, max_age=max_age, prompt=prompt, ui_locales=ui_locales
            )

        return await self._driver.call(
            self._authenticate_flow(
                authorize, open_browser=open_browser, timeout=timeout, redirect_uri=redirect_uri
            )
        )

    async def make_reauthenticate_url(
        self,
        redirect_uri: str,
        *,
        max_age: int = 0,
        prompt: str | list[str] | None = None,
        ui_locales: str | list[str] | None = None,
        state: str | None = None,
    ) -> str:
        """Coroutine. See :meth:`Authgear.make_reauthenticate_url`."""
        return await self._driver.call(
            self._core.reauthorize_flow(
                redirect_uri, max_age=max_age, prompt=prompt, ui_locales=ui_locales, state=state
            )
        )

    async def refresh_id_token(self) -> None:
        """Coroutine. See :meth:`Authgear.refresh_id_token`."""
        await self._driver.call(self._core.refresh_id_token_flow())

    async def authenticate_device(
        self, on_code: DeviceCodeCallback | None = None
    ) -> AuthenticateResult:
        """Coroutine. See :meth:`Authgear.authenticate_device`; ``on_code`` may also be a
        coroutine function. Cancelling the task stops polling; a poll already sent finishes
        first (it holds the storage lock), so the session is stored whole or not at all."""
        return await self._driver.call(self._device_flow(on_code))
