"""A ``requests`` auth for the sync :class:`Authgear` (``pip install 'authgear[requests]'``)."""

from __future__ import annotations

from typing import Any

from authgear.client._core import is_bearer_challenge
from authgear.client._sync import Authgear

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
    :class:`Authgear`."""

    def __init__(self, authgear: Authgear) -> None:
        if not isinstance(authgear, Authgear):
            raise TypeError("AuthgearRequestsAuth needs a (sync) Authgear instance")
        self.authgear = authgear

    def __repr__(self) -> str:
        return f"AuthgearRequestsAuth({self.authgear!r})"

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.authgear.refresh_access_token_if_needed()
        if token is not None:
            r.headers["Authorization"] = f"Bearer {token}"
            r.register_hook("response", self._make_hook(token))  # type: ignore[no-untyped-call]
        return r

    def _make_hook(self, token: str) -> Any:
        def hook(response: requests.Response, **kwargs: Any) -> requests.Response:
            request = response.request
            replayable = request.body is None or isinstance(request.body, bytes | str)
            if not (
                replayable
                and is_bearer_challenge(
                    response.status_code, response.headers.get("www-authenticate")
                )
            ):
                return response
            new = self.authgear._refresh_rejected(token)
            if new is None or new == token:
                return response
            response.content  # noqa: B018 - drain, so the connection can be reused
            response.close()
            retry = request.copy()
            retry.headers["Authorization"] = f"Bearer {new}"
            retry.hooks = {"response": []}
            sent: requests.Response = response.connection.send(retry, **kwargs)
            sent.history.append(response)
            sent.request = retry
            return sent

        return hook
