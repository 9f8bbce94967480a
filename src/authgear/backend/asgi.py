"""ASGI middleware for Starlette, FastAPI or any ASGI app (no framework import).

    app.add_middleware(AuthgearMiddleware, authenticator=JWTVerifier(endpoint))

Each HTTP or WebSocket request is authenticated once; the outcome is put in the scope
(``scope["authgear"]``, an :class:`AuthResult`), the user in ``request.state.authgear_user`` and
in :func:`authenticated_user` (``None`` without credentials, and for a client's token), and
whoever called in ``request.state.authgear_principal`` and :func:`authenticated_principal`.
With ``required=True`` the middleware itself answers 401 (or 503) for requests without a valid
user (``accept_clients=True``: or client); otherwise it lets them through and the endpoint
decides (``authgear.backend.fastapi``'s dependencies read the result).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any, NamedTuple

from authgear.backend._errors import BackendError
from authgear.backend._request import FORWARDING_HEADERS, socket_peer
from authgear.backend._types import (
    AuthenticatedUser,
    Authenticator,
    Principal,
    Wanted,
    check,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "authgear"
_RESULT: ContextVar[AuthResult | None] = ContextVar("authgear_result", default=None)
_FORWARDING = frozenset(h.encode() for h in FORWARDING_HEADERS)
_ENCODED = {"authorization": b"authorization", "cookie": b"cookie"}


class AuthResult(NamedTuple):
    """The middleware's outcome for one request: who called, or the reason nobody did.
    (A named tuple, built with _result(): a third of a frozen dataclass's cost, measured.)"""

    principal: Principal | None
    error: BackendError | None

    @property
    def user(self) -> AuthenticatedUser | None:
        """The user, or None (no credentials, an error, or a client)."""
        principal = self.principal
        return principal if type(principal) is AuthenticatedUser else None


class ASGIRequest:
    """A :class:`~authgear.backend.RequestLike` over an ASGI scope."""

    __slots__ = ("_scope",)

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    def header(self, name: str) -> str | None:
        key = _ENCODED.get(name) or name.encode("latin-1")
        for k, v in self._scope["headers"]:
            if k == key:  # ASGI header names are lower case, values bytes
                return v.decode("latin-1")  # type: ignore[no-any-return]
        return None

    def cookie(self, name: str) -> str | None:
        for k, v in self._scope["headers"]:
            if k != b"cookie":
                continue
            for part in bytes(v).decode("latin-1").split(";"):
                cname, sep, value = part.strip().partition("=")
                if sep and cname == name:
                    return value.strip().strip('"')
        return None

    @property
    def peer(self) -> str | None:
        """The socket peer, unless the server (uvicorn's default proxy-headers handling)
        may have rewritten it from a forwarding header: then None."""
        client = self._scope.get("client")
        if not client:
            return None
        forwarded = [
            bytes(v).decode("latin-1") for k, v in self._scope["headers"] if k in _FORWARDING
        ]
        return socket_peer(str(client[0]), forwarded)

    @property
    def method(self) -> str:
        return str(self._scope.get("method", "GET")).upper()


_new_tuple = tuple.__new__


def _result(principal: Principal | None, error: BackendError | None) -> AuthResult:
    # AuthResult(principal, error) without the named tuple's Python-level __new__.
    return _new_tuple(AuthResult, (principal, error))


_Nowait = Callable[[ASGIRequest], Principal | None] | None


def _nowait(authenticator: Authenticator) -> _Nowait:
    return getattr(authenticator, "authenticate_nowait", None)


def _authenticate_now(nowait: _Nowait, scope: Scope) -> AuthResult | None:
    """The outcome, if the authenticator can decide without I/O (``authenticate_nowait``: a
    known JWT key, proxy headers), else None. No coroutine on the hot path (measured)."""
    if nowait is None:
        return None
    try:
        principal = nowait(ASGIRequest(scope))
    except BackendError as e:
        return _result(None, e)
    return None if principal is None else _result(principal, None)


async def _authenticate_later(authenticator: Authenticator, scope: Scope) -> AuthResult:
    try:
        return _result(await authenticator.authenticate_async(ASGIRequest(scope)), None)
    except BackendError as e:
        return _result(None, e)


def _store(scope: Scope, result: AuthResult) -> None:
    scope[SCOPE_KEY] = result
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    principal = result[0]
    state["authgear_user"] = principal if type(principal) is AuthenticatedUser else None
    state["authgear_principal"] = principal
    _RESULT.set(result)


async def authenticate_scope(authenticator: Authenticator, scope: Scope) -> AuthResult:
    """Authenticate once per request; later calls (a dependency after the middleware) reuse it."""
    done = scope.get(SCOPE_KEY)
    if type(done) is AuthResult:
        return done
    result = _authenticate_now(_nowait(authenticator), scope)
    if result is None:
        result = await _authenticate_later(authenticator, scope)
    _store(scope, result)
    return result


def authenticated_user() -> AuthenticatedUser | None:
    """The user the middleware authenticated for the request being handled, or None.

    Reads a context variable, so an endpoint needs no ``request`` parameter (FastAPI parses
    query parameters and more for every declared parameter); sync endpoints run in a copy of
    the context and see it too. A client's token gives None here (see
    :func:`authenticated_principal`).
    """
    result = _RESULT.get()
    return result.user if result is not None else None


def authenticated_principal() -> Principal | None:
    """Whoever the middleware authenticated (a user or, where allowed, a client), or None."""
    result = _RESULT.get()
    return result.principal if result is not None else None


async def send_error(send: Send, error: BackendError, realm: str, scope: Scope) -> None:
    """Answer with the error's own status, headers and JSON body."""
    if scope["type"] == "websocket":
        # 1008 policy violation; the handshake is refused before the app sees it.
        await send({"type": "websocket.close", "code": 1008})
        return
    body = error.body_bytes()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in error.headers(realm).items()]
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
        accept_clients: bool = False,
        realm: str = "api",
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.required = required
        self.wanted: Wanted = "any" if accept_clients else "user"
        self.realm = realm
        self.exclude_paths = frozenset(exclude_paths)
        self._nowait = _nowait(authenticator)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exclude_paths:
            await self.app(scope, receive, send)
            return
        result = scope.get(SCOPE_KEY)
        if type(result) is not AuthResult:
            result = _authenticate_now(self._nowait, scope)
            if result is None:
                result = await _authenticate_later(self.authenticator, scope)
            _store(scope, result)
        principal, error = result
        scope["state"]["authgear_realm"] = self.realm
        if self.required:
            # The common case first: a user where users are wanted needs no further check.
            if principal is not None and not (
                type(principal) is AuthenticatedUser and self.wanted != "client"
            ):
                try:
                    check(principal, self.wanted)
                except BackendError as e:
                    error = e
            if error is not None:
                await send_error(send, error, self.realm, scope)
                return
        await self.app(scope, receive, send)
