"""Flask extension and decorators.

    auth = AuthgearFlask(app, JWTVerifier("https://myapp.authgear.cloud"))

    @app.get("/api/me")
    @auth.require_user
    def me():
        return auth.user().as_dict()

    @app.get("/api/admin")
    @auth.require_user(roles=["admin"])
    def admin(): ...

    @app.post("/api/sync")                      # with JWTVerifier(..., allow_clients=True)
    @auth.require_client(scopes=["sync"])
    def sync():
        return {"client": auth.principal().client_id}

``auth.current_user`` is the user or None (no credentials); a request is authenticated at
most once (kept in ``flask.g``). Errors are :class:`~authgear.backend.BackendError`s, which the
extension answers with the error's own status, headers and JSON body (RFC 6750 401/403, 503).
``required=True`` authenticates every request before its view (``exclude_endpoints`` aside).

The peer address: Werkzeug's ``ProxyFix`` rewrites ``REMOTE_ADDR`` from ``X-Forwarded-For``;
the original is read back from where ProxyFix keeps it, and a peer that only a forwarding
header vouches for counts as unknown (trusted-proxy mode then refuses the request).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from flask import Flask, Response, g, request

from authgear.backend._errors import BackendError, MissingCredentials
from authgear.backend._request import socket_peer
from authgear.backend._types import (
    AuthenticatedClient,
    AuthenticatedUser,
    Authenticator,
    Principal,
    Wanted,
    as_user,
    check,
)

__all__ = ["AuthgearFlask", "FlaskRequest"]

F = TypeVar("F", bound=Callable[..., Any])
_UNSET = object()


class FlaskRequest:
    """A :class:`~authgear.backend.RequestLike` over the current Flask request."""

    __slots__ = ()

    def header(self, name: str) -> str | None:
        return request.headers.get(name)

    def cookie(self, name: str) -> str | None:
        return request.cookies.get(name)

    @property
    def peer(self) -> str | None:
        environ = request.environ
        original = environ.get("werkzeug.proxy_fix.orig")  # ProxyFix keeps the real one here
        address = original.get("REMOTE_ADDR") if isinstance(original, dict) else None
        address = address or environ.get("REMOTE_ADDR")
        forwarded = [
            environ.get("HTTP_X_FORWARDED_FOR", ""),
            environ.get("HTTP_FORWARDED", ""),
            environ.get("HTTP_X_REAL_IP", ""),
        ]
        return socket_peer(address, forwarded)

    @property
    def method(self) -> str:
        return request.method.upper()


class AuthgearFlask:
    def __init__(
        self,
        app: Flask | None = None,
        authenticator: Authenticator | None = None,
        *,
        realm: str = "api",
        required: bool = False,
        exclude_endpoints: Iterable[str] = ("static",),
    ) -> None:
        self.authenticator = authenticator
        self.realm = realm
        self.required = required
        self.exclude_endpoints = frozenset(exclude_endpoints)
        if app is not None:
            self.init_app(app, authenticator)

    def init_app(self, app: Flask, authenticator: Authenticator | None = None) -> None:
        if authenticator is not None:
            self.authenticator = authenticator
        if self.authenticator is None:
            raise ValueError("AuthgearFlask needs an authenticator")
        app.extensions["authgear"] = self
        app.register_error_handler(BackendError, self._error_response)
        if self.required:
            app.before_request(self._require_before_request)

    # --- who is calling ----------------------------------------------------------------------

    def _authenticator(self) -> Authenticator:
        if self.authenticator is None:
            raise RuntimeError("AuthgearFlask has no authenticator: call init_app")
        return self.authenticator

    def _result(self) -> Principal | BackendError:
        done: Principal | BackendError | object = g.get("_authgear_result", _UNSET)
        if done is _UNSET:
            try:
                done = self._authenticator().authenticate(FlaskRequest())
            except BackendError as e:
                done = e
            g._authgear_result = done
        assert isinstance(done, AuthenticatedUser | AuthenticatedClient | BackendError)
        return done

    @property
    def current_user(self) -> AuthenticatedUser | None:
        """The user, or None without credentials; raises for invalid ones (a client's token
        included)."""
        result = self._result()
        if type(result) is MissingCredentials:
            return None
        if isinstance(result, BackendError):
            raise result
        return as_user(result)

    def user(self) -> AuthenticatedUser:
        """The user; raises (→ 401/503) when there is none."""
        return as_user(self.principal())

    def principal(self) -> Principal:
        """Whoever called (a client only where the authenticator allows clients)."""
        result = self._result()
        if isinstance(result, BackendError):
            raise result
        return result

    # --- decorators --------------------------------------------------------------------------

    def _decorator(
        self, wanted: Wanted, roles: Iterable[str], scopes: Iterable[str], any_role: bool
    ) -> Callable[[F], F]:
        roles_t, scopes_t = tuple(roles), tuple(scopes)

        def decorate(f: F) -> F:
            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                check(self.principal(), wanted, roles=roles_t, scopes=scopes_t, any_role=any_role)
                return f(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    @overload
    def require_user(self, view: F) -> F: ...

    @overload
    def require_user(
        self,
        view: None = None,
        *,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        any_role: bool = False,
    ) -> Callable[[F], F]: ...

    def require_user(
        self,
        view: F | None = None,
        *,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        any_role: bool = False,
    ) -> F | Callable[[F], F]:
        """``@auth.require_user`` or ``@auth.require_user(roles=[...], scopes=[...])``; a
        client's token is a 401 here, whatever the authenticator allows."""
        decorate = self._decorator("user", roles, scopes, any_role)
        return decorate(view) if view is not None else decorate

    def require_client(self, *, scopes: Iterable[str] = ()) -> Callable[[F], F]:
        """``@auth.require_client(scopes=[...])``: a client's token (client_credentials) only."""
        return self._decorator("client", (), scopes, False)

    def require_principal(self, *, scopes: Iterable[str] = ()) -> Callable[[F], F]:
        """``@auth.require_principal(scopes=[...])``: a user's or a client's token."""
        return self._decorator("any", (), scopes, False)

    # --- responses ---------------------------------------------------------------------------

    def _require_before_request(self) -> None:
        if request.endpoint in self.exclude_endpoints or request.method == "OPTIONS":
            return
        self.user()

    def _error_response(self, error: Exception) -> Response:
        assert isinstance(error, BackendError)
        return Response(
            error.body_bytes(),
            status=error.status_code,
            headers=error.headers(self.realm),
            mimetype="application/json",
        )
