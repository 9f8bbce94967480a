"""Adapters that put the SDK's access token on requests made with other HTTP clients.

- :class:`AuthgearAuth` -- an ``httpx2.Auth`` for any ``httpx2.Client`` / ``AsyncClient``
  (``httpx_auth()`` gives the same for plain ``httpx``). It has real ``sync_auth_flow`` and
  ``async_auth_flow``: an async client refreshes with the :class:`AsyncAuthgear` without
  blocking the loop (or with a sync :class:`Authgear` in a worker thread).
- ``authgear.client.requests_auth.AuthgearRequestsAuth`` -- a ``requests`` auth.

All three add ``Authorization: Bearer``, and on a 401 with a Bearer challenge refresh once and
retry once when the body can be replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx2

from authgear.client._async import AsyncAuthgear
from authgear.client._base import is_replayable
from authgear.client._core import is_bearer_challenge
from authgear.client._sync import Authgear

__all__ = ["AuthgearAuth", "httpx_auth"]


class _AuthFlows:
    """The flows, independent of which httpx flavour's ``Auth`` base class is used."""

    def __init__(self, authgear: Authgear | AsyncAuthgear) -> None:
        if not isinstance(authgear, Authgear | AsyncAuthgear):
            raise TypeError("expected an Authgear or AsyncAuthgear instance")
        self.authgear = authgear

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.authgear!r})"

    def _sync_client(self) -> Authgear:
        if not isinstance(self.authgear, Authgear):
            raise TypeError(
                "an AsyncAuthgear cannot authorize a synchronous client; "
                "use Authgear for httpx2.Client"
            )
        return self.authgear

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        ag = self._sync_client()
        token = ag.refresh_access_token_if_needed()
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if (
            token is not None
            and is_bearer_challenge(response.status_code, response.headers.get("www-authenticate"))
            and is_replayable(request)
        ):
            new = ag._refresh_rejected(token)
            if new is not None and new != token:
                request.headers["Authorization"] = f"Bearer {new}"
                yield request

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        ag = self.authgear
        if isinstance(ag, AsyncAuthgear):
            token = await ag.refresh_access_token_if_needed()
        else:
            token = await asyncio.to_thread(ag.refresh_access_token_if_needed)
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if (
            token is not None
            and is_bearer_challenge(response.status_code, response.headers.get("www-authenticate"))
            and is_replayable(request)
        ):
            if isinstance(ag, AsyncAuthgear):
                new = await ag._refresh_rejected(token)
            else:
                new = await asyncio.to_thread(ag._refresh_rejected, token)
            if new is not None and new != token:
                request.headers["Authorization"] = f"Bearer {new}"
                yield request


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


def httpx_auth(authgear: Authgear | AsyncAuthgear) -> Any:
    """An ``httpx.Auth`` (plain httpx, not httpx2) for ``httpx.Client(auth=...)``."""
    global _httpx_auth_class
    if _httpx_auth_class is None:
        import httpx

        class HttpxAuthgearAuth(_AuthFlows, httpx.Auth):
            sync_auth_flow = _AuthFlows.sync_auth_flow
            async_auth_flow = _AuthFlows.async_auth_flow

        _httpx_auth_class = HttpxAuthgearAuth
    return _httpx_auth_class(authgear)
