"""Adapters that put the SDK's access token on requests made with other HTTP clients.

- :class:`AuthgearAuth` -- an ``httpx2.Auth`` for any ``httpx2.Client`` / ``AsyncClient``
  (``httpx_auth()`` gives the same for plain ``httpx``). It has real ``sync_auth_flow`` and
  ``async_auth_flow``: an async client refreshes with the :class:`AsyncAuthgear` without
  blocking the loop (or with a sync :class:`Authgear` in a worker thread). ``fetch`` sends
  through it too.
- ``authgear.client.requests_auth.AuthgearRequestsAuth`` -- a ``requests`` auth.

All of them drive the core's :func:`~authgear.client._core.bearer_flow` (add
``Authorization: Bearer``; on a 401 with a Bearer challenge refresh once and retry once when
the body can be replayed), and get tokens through the SDK's public methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any

import httpx2

from authgear.client._async import AsyncAuthgear
from authgear.client._base import (
    anext_send,
    bearer_answer,
    is_plain_httpx,
    is_replayable,
    next_send,
)
from authgear.client._core import bearer_flow
from authgear.client._sync import Authgear

__all__ = ["AuthgearAuth", "auth_for_client", "httpx_auth", "sync_token", "token_getter"]


def sync_token(authgear: Authgear[Any]) -> Callable[[str | None], str | None]:
    """Answers :func:`bearer_flow`'s ``GetToken``: the token, refreshed if needed, or
    refreshed past the one the resource server rejected."""

    def get(rejected: str | None) -> str | None:
        if rejected is None:
            return authgear.refresh_access_token_if_needed()
        return authgear.refresh_access_token(rejected=rejected)

    return get


def token_getter(
    authgear: Authgear[Any] | AsyncAuthgear[Any],
) -> Callable[[str | None], Awaitable[str | None]]:
    """:func:`sync_token` for an event loop (a sync ``Authgear`` runs in a worker thread)."""
    if isinstance(authgear, AsyncAuthgear):
        ag = authgear

        async def get(rejected: str | None) -> str | None:
            if rejected is None:
                return await ag.refresh_access_token_if_needed()
            return await ag.refresh_access_token(rejected=rejected)

        return get
    blocking = sync_token(authgear)

    async def get_in_thread(rejected: str | None) -> str | None:
        return await asyncio.to_thread(blocking, rejected)

    return get_in_thread


def _set_bearer(request: Any, token: str | None) -> None:
    if token is not None:
        request.headers["Authorization"] = f"Bearer {token}"


class _AuthFlows:
    """The flows, independent of which httpx flavour's ``Auth`` base class is used."""

    def __init__(self, authgear: Authgear[Any] | AsyncAuthgear[Any]) -> None:
        if not isinstance(authgear, Authgear | AsyncAuthgear):
            raise TypeError("expected an Authgear or AsyncAuthgear instance")
        self.authgear = authgear

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.authgear!r})"

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        if not isinstance(self.authgear, Authgear):
            raise TypeError(
                "an AsyncAuthgear cannot authorize a synchronous client; "
                "use Authgear for httpx2.Client"
            )
        get = sync_token(self.authgear)
        flow = bearer_flow(is_replayable(request))
        step = next_send(flow, None, get)
        while step is not None:
            _set_bearer(request, step.token)
            response = yield request
            step = next_send(flow, bearer_answer(response), get)

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        get = token_getter(self.authgear)
        flow = bearer_flow(is_replayable(request))
        step = await anext_send(flow, None, get)
        while step is not None:
            _set_bearer(request, step.token)
            response = yield request
            step = await anext_send(flow, bearer_answer(response), get)


class AuthgearAuth(_AuthFlows, httpx2.Auth):
    """``httpx2.Client(auth=AuthgearAuth(authgear))``."""

    def sync_auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        return _AuthFlows.sync_auth_flow(self, request)

    def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        return _AuthFlows.async_auth_flow(self, request)


_httpx_auth_class: type[Any] | None = None


def httpx_auth(authgear: Authgear[Any] | AsyncAuthgear[Any]) -> Any:
    """An ``httpx.Auth`` (plain httpx, not httpx2) for ``httpx.Client(auth=...)``."""
    global _httpx_auth_class
    if _httpx_auth_class is None:
        import httpx

        class HttpxAuthgearAuth(_AuthFlows, httpx.Auth):
            sync_auth_flow = _AuthFlows.sync_auth_flow
            async_auth_flow = _AuthFlows.async_auth_flow

        _httpx_auth_class = HttpxAuthgearAuth
    return _httpx_auth_class(authgear)


def auth_for_client(authgear: Authgear[Any] | AsyncAuthgear[Any], client: object) -> Any:
    """The adapter matching ``client``'s library (what ``fetch`` sends through)."""
    return httpx_auth(authgear) if is_plain_httpx(client) else AuthgearAuth(authgear)
