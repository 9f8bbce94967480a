"""ASGI middleware for Starlette, FastAPI or any ASGI app (no framework import).

    app.add_middleware(AuthgearMiddleware, authenticator=JWTVerifier(endpoint))

Each HTTP or WebSocket request is authenticated once; the outcome is put in the scope
(``scope["authgear"]``, an :class:`AuthResult`) and the user in ``request.state.authgear_user``
and in :func:`authenticated_user` (``None`` without credentials). With ``required=True`` the
middleware itself answers 401 (or 503) for requests without a valid user; otherwise it lets them
through and the endpoint decides (``authgear.backend.fastapi``'s dependencies read the result).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from authgear.backend._types import (
    AuthenticatedUser,
    Authenticator,
    AuthError,
    BackendUnavailable,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "authgear"
_RESULT: ContextVar[AuthResult | None] = ContextVar("authgear_result", default=None)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The middleware's outcome for one request: a user, or the reason there is none."""

    user: AuthenticatedUser | None
    error: AuthError | BackendUnavailable | None


class ASGIRequest:
    """A :class:`~authgear.backend.RequestLike` over an ASGI scope."""

    __slots__ = ("_scope",)

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    def header(self, name: str) -> str | None:
        key = name.encode("latin-1")
        for k, v in self._scope.get("headers", ()):
            if k == key:  # ASGI header names are lower case
                return bytes(v).decode("latin-1")
        return None

    def cookie(self, name: str) -> str | None:
        for k, v in self._scope.get("headers", ()):
            if k != b"cookie":
                continue
            for part in bytes(v).decode("latin-1").split(";"):
                cname, sep, value = part.strip().partition("=")
                if sep and cname == name:
                    return value.strip().strip('"')
        return None

    @property
    def peer(self) -> str | None:
        client = self._scope.get("client")
        return str(client[0]) if client else None


async def authenticate_scope(authenticator: Authenticator, scope: Scope) -> AuthResult:
    """Authenticate once per request; later calls (a dependency after the middleware) reuse it."""
    done = scope.get(SCOPE_KEY)
    if isinstance(done, AuthResult):
        return done
    try:
        result = AuthResult(await authenticator.authenticate_async(ASGIRequest(scope)), None)
    except (AuthError, BackendUnavailable) as e:
        result = AuthResult(None, e)
    scope[SCOPE_KEY] = result
    scope.setdefault("state", {})["authgear_user"] = result.user
    _RESULT.set(result)
    return result


def authenticated_user() -> AuthenticatedUser | None:
    """The user the middleware authenticated for the request being handled, or None.

    Reads a context variable, so an endpoint needs no ``request`` parameter (FastAPI parses
    query parameters and more for every declared parameter); sync endpoints run in a copy of
    the context and see it too.
    """
    result = _RESULT.get()
    return result.user if result is not None else None


async def send_error(
    send: Send, error: AuthError | BackendUnavailable, realm: str, scope: Scope
) -> None:
    if scope["type"] == "websocket":
        # 1008 policy violation; the handshake is refused before the app sees it.
        await send({"type": "websocket.close", "code": 1008})
        return
    body = error.body_bytes()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if isinstance(error, AuthError):
        headers.append((b"www-authenticate", error.www_authenticate(realm).encode("latin-1")))
    else:
        headers.append((b"retry-after", b"5"))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AuthgearMiddleware:
    """Pure ASGI middleware; ``exclude_paths`` are passed through untouched (e.g. health)."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        *,
        required: bool = False,
        realm: str = "api",
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.required = required
        self.realm = realm
        self.exclude_paths = frozenset(exclude_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["authgear_realm"] = self.realm
        result = await authenticate_scope(self.authenticator, scope)
        if self.required and result.error is not None:
            await send_error(send, result.error, self.realm, scope)
            return
        await self.app(scope, receive, send)
