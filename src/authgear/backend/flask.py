"""Flask extension and decorator.

    auth = AuthgearFlask(app, JWTVerifier("https://myapp.authgear.cloud"))

    @app.get("/api/me")
    @auth.require_user
    def me():
        return auth.current_user.as_dict()

    @app.get("/api/admin")
    @auth.require_user(roles=["admin"])
    def admin(): ...

``auth.current_user`` is the user or None (no credentials); a request is authenticated at
most once (kept in ``flask.g``). Invalid credentials raise :class:`~authgear.backend.AuthError`,
which the extension answers as RFC 6750 401/403 JSON; an unreachable Authgear is a 503.
``required=True`` authenticates every request before its view (``exclude_endpoints`` aside).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from flask import Flask, Response, g, request

from authgear.backend._types import (
    AuthenticatedUser,
    Authenticator,
    AuthError,
    BackendUnavailable,
    MissingCredentials,
    require,
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
        return request.remote_addr


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
        app.register_error_handler(AuthError, self._error_response)
        app.register_error_handler(BackendUnavailable, self._error_response)
        if self.required:
            app.before_request(self._require_before_request)

    # --- user -------------------------------------------------------------------------------

    def _authenticator(self) -> Authenticator:
        if self.authenticator is None:
            raise RuntimeError("AuthgearFlask has no authenticator: call init_app")
        return self.authenticator

    def _result(self) -> AuthenticatedUser | AuthError | BackendUnavailable:
        done = g.get("_authgear_result", _UNSET)
        if done is _UNSET:
            try:
                done = self._authenticator().authenticate(FlaskRequest())
            except (AuthError, BackendUnavailable) as e:
                done = e
            g._authgear_result = done
        return done  # type: ignore[no-any-return]

    @property
    def current_user(self) -> AuthenticatedUser | None:
        """The user, or None without credentials; raises AuthError for invalid ones."""
        result = self._result()
        if isinstance(result, MissingCredentials):
            return None
        if isinstance(result, AuthError | BackendUnavailable):
            raise result
        return result

    def user(self) -> AuthenticatedUser:
        """The user; raises (→ 401/503) when there is none."""
        result = self._result()
        if isinstance(result, AuthError | BackendUnavailable):
            raise result
        return result

    # --- decorator --------------------------------------------------------------------------

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
        """``@auth.require_user`` or ``@auth.require_user(roles=[...], scopes=[...])``."""
        roles_t, scopes_t = tuple(roles), tuple(scopes)

        def decorate(f: F) -> F:
            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                require(self.user(), roles=roles_t, scopes=scopes_t, any_role=any_role)
                return f(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate(view) if view is not None else decorate

    # --- responses --------------------------------------------------------------------------

    def _require_before_request(self) -> None:
        if request.endpoint in self.exclude_endpoints or request.method == "OPTIONS":
            return
        self.user()

    def _error_response(self, error: Exception) -> Response:
        if isinstance(error, AuthError):
            headers = error.headers(self.realm)
            body, status = error.body_bytes(), error.status_code
        else:
            headers = {"Retry-After": "5", "Cache-Control": "no-store"}
            body, status = BackendUnavailable().body_bytes(), 503
        return Response(body, status=status, headers=headers, mimetype="application/json")
