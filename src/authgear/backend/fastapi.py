"""FastAPI dependencies: ``current_user`` (optional) and ``require_user`` (roles, scopes).

    auth = AuthgearDependencies(JWTVerifier("https://myapp.authgear.cloud"))

    @app.get("/api/me")
    async def me(user: AuthenticatedUser = Depends(auth.require_user())): ...

    @app.get("/api/admin")
    async def admin(user: AuthenticatedUser = Depends(auth.require_user(roles=["admin"]))): ...

    @app.get("/api/hello")
    async def hello(user: AuthenticatedUser | None = Depends(auth.current_user)): ...

With :class:`authgear.backend.asgi.AuthgearMiddleware` installed, the module-level
``current_user`` and ``require_user(...)`` read the middleware's result instead, and
``AuthgearDependencies`` reuses it too (a request is authenticated once).

Errors are ``HTTPException``s: 401 with ``WWW-Authenticate: Bearer realm="api"`` (no
credentials) or ``..., error="invalid_token"`` (bad ones), 403 ``insufficient_scope``,
503 when Authgear cannot be asked. The body is ``{"detail": {"error", "error_description"}}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from fastapi import HTTPException, Request

from authgear.backend._types import (
    AuthenticatedUser,
    Authenticator,
    AuthError,
    BackendUnavailable,
    MissingCredentials,
    require,
)
from authgear.backend.asgi import SCOPE_KEY, AuthResult, authenticate_scope

__all__ = ["AuthgearDependencies", "current_user", "http_exception", "require_user"]

UserDependency = Callable[[Request], Awaitable[AuthenticatedUser]]


def http_exception(error: AuthError | BackendUnavailable, realm: str = "api") -> HTTPException:
    if isinstance(error, AuthError):
        return HTTPException(error.status_code, detail=error.body(), headers=error.headers(realm))
    return HTTPException(
        503,
        detail={"error": "temporarily_unavailable", "error_description": "try again later"},
        headers={"Retry-After": "5", "Cache-Control": "no-store"},
    )


def _user(result: AuthResult, realm: str, *, optional: bool) -> AuthenticatedUser | None:
    if result.error is None:
        return result.user
    if optional and isinstance(result.error, MissingCredentials):
        return None
    raise http_exception(result.error, realm)


def _checked(
    user: AuthenticatedUser | None,
    realm: str,
    roles: tuple[str, ...],
    scopes: tuple[str, ...],
    any_role: bool,
) -> AuthenticatedUser:
    if user is None:  # pragma: no cover - _user raised already
        raise http_exception(MissingCredentials(), realm)
    try:
        return require(user, roles=roles, scopes=scopes, any_role=any_role)
    except AuthError as e:
        raise http_exception(e, realm) from None


class AuthgearDependencies:
    """Dependencies bound to one authenticator (works with or without the middleware)."""

    def __init__(self, authenticator: Authenticator, *, realm: str = "api") -> None:
        self.authenticator = authenticator
        self.realm = realm

    async def current_user(self, request: Request) -> AuthenticatedUser | None:
        """The user, or None without credentials; invalid credentials are still a 401."""
        result = await authenticate_scope(self.authenticator, request.scope)
        return _user(result, self.realm, optional=True)

    def require_user(
        self, *, roles: Iterable[str] = (), scopes: Iterable[str] = (), any_role: bool = False
    ) -> UserDependency:
        """A dependency returning the user; 401 without one, 403 without the roles/scopes
        (all of ``roles``, or any one with ``any_role=True``; all of ``scopes``)."""
        roles_t, scopes_t, realm = tuple(roles), tuple(scopes), self.realm

        async def authgear_user(request: Request) -> AuthenticatedUser:
            result = await authenticate_scope(self.authenticator, request.scope)
            user = _user(result, realm, optional=False)
            return _checked(user, realm, roles_t, scopes_t, any_role)

        return authgear_user


def _middleware_result(request: Request) -> AuthResult:
    result = request.scope.get(SCOPE_KEY)
    if not isinstance(result, AuthResult):
        raise RuntimeError(
            "authgear.backend.fastapi.current_user needs AuthgearMiddleware on the app "
            "(or use AuthgearDependencies(authenticator))"
        )
    return result


def _realm(request: Request) -> str:
    return str(request.scope.get("state", {}).get("authgear_realm", "api"))


async def current_user(request: Request) -> AuthenticatedUser | None:
    """The middleware's user, or None without credentials (invalid ones: 401)."""
    return _user(_middleware_result(request), _realm(request), optional=True)


def require_user(
    *, roles: Iterable[str] = (), scopes: Iterable[str] = (), any_role: bool = False
) -> UserDependency:
    """Like :meth:`AuthgearDependencies.require_user`, from the middleware's result."""
    roles_t, scopes_t = tuple(roles), tuple(scopes)

    async def authgear_user(request: Request) -> AuthenticatedUser:
        realm = _realm(request)
        user = _user(_middleware_result(request), realm, optional=False)
        return _checked(user, realm, roles_t, scopes_t, any_role)

    return authgear_user
