"""FastAPI dependencies: ``current_user`` (optional) and ``require_user`` (roles, scopes); for
machine-to-machine endpoints ``require_client`` and ``require_principal``.

    auth = AuthgearDependencies(JWTVerifier("https://myapp.authgear.cloud"))

    @app.get("/api/me")
    async def me(user: AuthenticatedUser = Depends(auth.require_user())): ...

    @app.get("/api/admin")
    async def admin(user: AuthenticatedUser = Depends(auth.require_user(roles=["admin"]))): ...

    @app.get("/api/hello")
    async def hello(user: AuthenticatedUser | None = Depends(auth.current_user)): ...

    # with JWTVerifier(..., allow_clients=True):
    @app.post("/api/sync")
    async def sync(client: AuthenticatedClient = Depends(auth.require_client(scopes=["sync"]))):

With :class:`authgear.backend.asgi.AuthgearMiddleware` installed, the module-level functions of
the same names read the middleware's result instead, and ``AuthgearDependencies`` reuses it
too (a request is authenticated once).

Errors are ``HTTPException``s built from the error itself (its status, headers and body):
401 with ``WWW-Authenticate: Bearer realm="api"`` (no credentials) or ``...,
error="invalid_token"`` (bad ones, or a client's token where a user is required), 403
``insufficient_scope``, 503 when Authgear cannot be asked. The body is ``{"detail": {"error",
"error_description"}}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from fastapi import HTTPException, Request

from authgear.backend._errors import BackendError, MissingCredentials
from authgear.backend._types import (
    AuthenticatedClient,
    AuthenticatedUser,
    Authenticator,
    Principal,
    Wanted,
    as_client,
    as_user,
    check,
)
from authgear.backend.asgi import SCOPE_KEY, AuthResult, authenticate_scope

__all__ = [
    "AuthgearDependencies",
    "current_principal",
    "current_user",
    "http_exception",
    "require_client",
    "require_principal",
    "require_user",
]

UserDependency = Callable[[Request], Awaitable[AuthenticatedUser]]
ClientDependency = Callable[[Request], Awaitable[AuthenticatedClient]]
PrincipalDependency = Callable[[Request], Awaitable[Principal]]
_Results = Callable[[Request], Awaitable[AuthResult]]


def http_exception(error: BackendError, realm: str = "api") -> HTTPException:
    return HTTPException(error.status_code, detail=error.body(), headers=error.headers(realm))


class _Factory:
    """The dependencies, given how to get a request's result (when neither the middleware nor
    an earlier dependency has put it in the scope) and its realm (only read for an error)."""

    def __init__(self, results: _Results, realm: Callable[[Request], str]) -> None:
        self._results = results
        self._realm = realm

    async def _result(self, request: Request) -> AuthResult:
        done = request.scope.get(SCOPE_KEY)
        if type(done) is AuthResult:
            return done
        return await self._results(request)

    def _check(
        self,
        request: Request,
        result: AuthResult,
        wanted: Wanted,
        roles: tuple[str, ...] = (),
        scopes: tuple[str, ...] = (),
        any_role: bool = False,
    ) -> Principal:
        """The principal if it is the wanted kind with the roles and scopes, else an
        HTTPException built from the error."""
        principal, error = result
        if error is None and principal is not None:
            # The hot path, no further calls: a user where users are wanted, no roles asked.
            hot = type(principal) is AuthenticatedUser and wanted != "client" and not roles
            if hot and (not scopes or principal.has_scopes(scopes)):
                return principal
            try:
                return check(principal, wanted, roles=roles, scopes=scopes, any_role=any_role)
            except BackendError as e:
                error = e
        raise http_exception(error or MissingCredentials(), self._realm(request)) from None

    def _optional(self, request: Request, result: AuthResult, wanted: Wanted) -> Principal | None:
        """Like _check, but None without credentials (invalid ones are still an error)."""
        if type(result.error) is MissingCredentials:
            return None
        return self._check(request, result, wanted)

    async def current_user(self, request: Request) -> AuthenticatedUser | None:
        """The user, or None without credentials; invalid credentials (and a client's token)
        are still a 401."""
        principal = self._optional(request, await self._result(request), "user")
        return None if principal is None else as_user(principal)

    async def current_principal(self, request: Request) -> Principal | None:
        """Whoever called (a user, or a client where the authenticator allows clients)."""
        return self._optional(request, await self._result(request), "any")

    def require_user(
        self, *, roles: Iterable[str] = (), scopes: Iterable[str] = (), any_role: bool = False
    ) -> UserDependency:
        """A dependency returning the user; 401 without one (a client's token included), 403
        without the roles/scopes (all of ``roles``, or any one with ``any_role=True``)."""
        roles_t, scopes_t = tuple(roles), tuple(scopes)

        async def authgear_user(request: Request) -> AuthenticatedUser:
            result = await self._result(request)
            return as_user(self._check(request, result, "user", roles_t, scopes_t, any_role))

        return authgear_user

    def require_client(self, *, scopes: Iterable[str] = ()) -> ClientDependency:
        """A dependency returning the calling client (needs ``allow_clients=True`` on the
        authenticator); 401 for a user's token, 403 without the scopes."""
        scopes_t = tuple(scopes)

        async def authgear_client(request: Request) -> AuthenticatedClient:
            result = await self._result(request)
            return as_client(self._check(request, result, "client", (), scopes_t))

        return authgear_client

    def require_principal(self, *, scopes: Iterable[str] = ()) -> PrincipalDependency:
        """A dependency returning a user or a client, with the scopes."""
        scopes_t = tuple(scopes)

        async def authgear_principal(request: Request) -> Principal:
            result = await self._result(request)
            return self._check(request, result, "any", (), scopes_t)

        return authgear_principal


class AuthgearDependencies(_Factory):
    """Dependencies bound to one authenticator (works with or without the middleware)."""

    def __init__(self, authenticator: Authenticator, *, realm: str = "api") -> None:
        self.authenticator = authenticator
        self.realm = realm
        super().__init__(
            lambda request: authenticate_scope(authenticator, request.scope), lambda _: realm
        )


async def _middleware_result(request: Request) -> AuthResult:
    # Only reached when the middleware put no result in the scope.
    raise RuntimeError(
        "authgear.backend.fastapi.current_user needs AuthgearMiddleware on the app "
        "(or use AuthgearDependencies(authenticator))"
    )


def _realm(request: Request) -> str:
    return str(request.scope.get("state", {}).get("authgear_realm", "api"))


_middleware = _Factory(_middleware_result, _realm)
current_user = _middleware.current_user
current_principal = _middleware.current_principal
require_user = _middleware.require_user
require_client = _middleware.require_client
require_principal = _middleware.require_principal
