"""A ``requests`` auth for the sync :class:`Authgear` (``pip install 'authgear[requests]'``)."""

from __future__ import annotations

from typing import Any

from authgear.client._base import bearer_answer, next_send
from authgear.client._core import BearerFlow, bearer_flow
from authgear.client._sync import Authgear
from authgear.client.adapters import sync_token

try:
    import requests
    import requests.auth
except ImportError as e:  # pragma: no cover - depends on the extra
    raise ImportError(
        "AuthgearRequestsAuth needs requests: pip install 'authgear[requests]'"
    ) from e

__all__ = ["AuthgearRequestsAuth"]


class AuthgearRequestsAuth(requests.auth.AuthBase):
    """``requests.get(url, auth=AuthgearRequestsAuth(authgear))`` with a sync
    :class:`Authgear`. Drives the same bearer flow as ``fetch``: the first send happens in
    ``__call__``, the retry (if any) in a response hook."""

    def __init__(self, authgear: Authgear[Any]) -> None:
        if not isinstance(authgear, Authgear):
            raise TypeError("AuthgearRequestsAuth needs a (sync) Authgear instance")
        self.authgear = authgear
        self._get_token = sync_token(authgear)

    def __repr__(self) -> str:
        return f"AuthgearRequestsAuth({self.authgear!r})"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        replayable = r.body is None or isinstance(r.body, bytes | str)
        flow = bearer_flow(replayable)
        step = next_send(flow, None, self._get_token)
        if step is not None and step.token is not None:
            r.headers["Authorization"] = f"Bearer {step.token}"
            r.register_hook("response", self._make_hook(flow))  # type: ignore[no-untyped-call]
        return r

    def _make_hook(self, flow: BearerFlow) -> Any:
        def hook(response: requests.Response, **kwargs: Any) -> requests.Response:
            step = next_send(flow, bearer_answer(response), self._get_token)
            while step is not None:
                response = self._resend(response, step.token, kwargs)
                step = next_send(flow, bearer_answer(response), self._get_token)
            return response

        return hook

    @staticmethod
    def _resend(
        response: requests.Response, token: str | None, kwargs: dict[str, Any]
    ) -> requests.Response:
        response.content  # noqa: B018 - drain, so the connection can be reused
        response.close()
        retry = response.request.copy()
        if token is not None:
            retry.headers["Authorization"] = f"Bearer {token}"
        retry.hooks = {"response": []}
        sent: requests.Response = response.connection.send(retry, **kwargs)
        sent.history.append(response)
        sent.request = retry
        return sent
