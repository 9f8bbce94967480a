"""The ASGI application: each listener's routes, error handling, and the process lifespan.

One app serves every listener of a process (the public port, and optionally the resolver,
admin and metrics ports): a request is routed by the local port it arrived on, so the admin API
or /metrics can be kept off the public port, with one or several worker processes alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy.exc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from authgear.server import logs, metrics, passwords
from authgear.server.admin import admin_routes
from authgear.server.config import ServerConfig, Settings, load_settings
from authgear.server.endpoints.account import account_routes
from authgear.server.endpoints.authorize import authorize_endpoint
from authgear.server.endpoints.device import device_authorization_endpoint, device_page
from authgear.server.endpoints.discovery import discovery_endpoint, jwks_endpoint
from authgear.server.endpoints.end_session import end_session_endpoint
from authgear.server.endpoints.login import home_page, logout_page
from authgear.server.endpoints.resolver import resolve_endpoint
from authgear.server.endpoints.revocations import revocations_endpoint
from authgear.server.endpoints.revoke import revoke_endpoint
from authgear.server.endpoints.token import token_endpoint
from authgear.server.endpoints.userinfo import userinfo_endpoint
from authgear.server.health import (
    healthz,
    metrics_endpoint,
    metrics_with_token,
    readyz,
)
from authgear.server.lifecycle import build_state, close_state, maintain_forever, sample_forever
from authgear.server.logs import CAUSE_LOGGED
from authgear.server.middleware import (
    DISCONNECTED,
    CORSMiddleware,
    OuterMiddleware,
    describe_exception,
    server_error_response,
)
from authgear.server.signin.routes import signin_routes
from authgear.server.state import ServerState, get_state
from authgear.server.ui import busy_page

log = logging.getLogger("authgear.server")

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True, slots=True)
class Listener:
    """A socket the server listens on, and which routes it serves."""

    kind: str  # "public", "resolver", "admin" or "metrics"
    host: str
    port: int


def listeners(config: ServerConfig) -> list[Listener]:
    found = [Listener("public", config.host, config.port)]
    if config.resolver_port is not None:
        found.append(Listener("resolver", config.host, config.resolver_port))
    if config.admin_enabled and config.admin_port is not None:
        found.append(Listener("admin", config.admin_host or config.host, config.admin_port))
    if config.metrics_enabled and config.metrics_port is not None:
        found.append(Listener("metrics", config.metrics_host or config.host, config.metrics_port))
    return found


# -- errors -----------------------------------------------------------------------------------

# The database is away (stopped, restarting, unreachable, pool exhausted): answer 503 at once
# and let the pool reconnect when it is back, instead of hanging or answering 500.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
    OSError,
    TimeoutError,
)
# SQLSTATE classes of a server that is away rather than a query that is wrong: connection
# exception (08), insufficient resources (53, e.g. too many connections), operator
# intervention (57: "the database system is shutting down / starting up").
UNAVAILABLE_SQLSTATE = ("08", "53", "57")


def unavailable_cause(exc: BaseException) -> str | None:
    """Why the database counts as away, or None for a real error."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(seen) < 8 and e not in seen:
        seen.append(e)
        if isinstance(e, UNAVAILABLE_ERRORS) or getattr(e, "connection_invalidated", False):
            return type(e).__name__
        code = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(code, str) and code[:2] in UNAVAILABLE_SQLSTATE:
            return f"{type(e).__name__} (SQLSTATE {code})"
        inner = getattr(e, "orig", None)
        e = inner if isinstance(inner, BaseException) else (e.__cause__ or e.__context__)
    return None


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not_found"}, status_code=404)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "method_not_allowed"}, status_code=405)


async def _error(request: Request, exc: Exception) -> Response:
    """Every exception a handler let through: the database away is a 503 (logged as a
    warning with its cause), anything else a 500 logged as one ERROR line with its cause."""
    scope = request.scope
    scope[CAUSE_LOGGED] = True
    route = metrics.route_label(scope)
    if scope.get(DISCONNECTED):
        return server_error_response()  # nobody is listening; logged as 499
    cause = unavailable_cause(exc)
    if cause is not None:
        metrics.DB_UNAVAILABLE.inc()
        log.warning("database unavailable on %s %s: %s", scope["method"], route, cause)
        return JSONResponse(
            {"error": "temporarily_unavailable", "error_description": "try again shortly"},
            status_code=503,
            headers={"Cache-Control": "no-store", "Retry-After": "1"},
        )
    log.error(
        "internal error on %s %s: %s",
        scope["method"],
        route,
        describe_exception(exc),
        exc_info=log.isEnabledFor(logging.DEBUG),
    )
    return server_error_response()


async def _hashing_busy(request: Request, exc: Exception) -> Response:
    """More password checks than the bound at once (passwords.py): 503, logged as the cause
    (a warning, not an error: the server is doing what it was configured to do)."""
    retry_after = exc.retry_after if isinstance(exc, passwords.HashingBusy) else 5
    passwords.log_busy(request.scope)
    return busy_page(get_state(request), request, retry_after)


# -- routes -----------------------------------------------------------------------------------


def _is_admin(route: BaseRoute) -> bool:
    path = getattr(route, "path", "")
    return isinstance(path, str) and (path.startswith(("/_api/admin", "/portal")))


def _health() -> list[BaseRoute]:
    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]


def _resolver() -> list[BaseRoute]:
    return [
        Route("/_resolver/resolve", resolve_endpoint, methods=["GET", "HEAD"]),
        Route("/resolve", resolve_endpoint, methods=["GET", "HEAD"]),
        Route("/_resolver/revocations", revocations_endpoint, methods=["GET"]),
    ]


def _sign_in_pages() -> list[BaseRoute]:
    return [
        *signin_routes(),
        Route("/logout", logout_page, methods=["POST"]),
        Route("/device", device_page, methods=["GET", "POST"]),
        Route("/", home_page, methods=["GET"]),
        *account_routes(),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]


def _oidc() -> list[BaseRoute]:
    return [
        Route("/.well-known/openid-configuration", discovery_endpoint, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", discovery_endpoint, methods=["GET"]),
        Route("/oauth2/authorize", authorize_endpoint, methods=["GET", "POST"]),
        Route("/oauth2/token", token_endpoint, methods=["POST"]),
        Route("/oauth2/device_authorization", device_authorization_endpoint, methods=["POST"]),
        Route("/oauth2/userinfo", userinfo_endpoint, methods=["GET", "POST"]),
        Route("/oauth2/revoke", revoke_endpoint, methods=["POST"]),
        Route("/oauth2/jwks", jwks_endpoint, methods=["GET"]),
        Route("/oauth2/end_session", end_session_endpoint, methods=["GET", "POST"]),
    ]


def routes_for(kind: str, config: ServerConfig) -> list[BaseRoute]:
    """The routes a listener serves. The admin API and portal are on the public port unless
    they have their own (or are off); /metrics only on its own port or behind its token."""
    if kind == "metrics":
        return [*_health(), Route("/metrics", metrics_endpoint, methods=["GET"])]
    if kind == "resolver":
        return [*_resolver(), *_health()]
    admin = [r for r in admin_routes() if _is_admin(r)]
    if kind == "admin":
        # The portal signs its admins in through the same pages.
        return [*_health(), *admin, *_sign_in_pages()]
    routes = [*_resolver(), *_health(), *_oidc(), *_sign_in_pages()]
    routes += [r for r in admin_routes() if not _is_admin(r)]  # a user's own sessions
    if config.admin_enabled and config.admin_port is None:
        routes += admin
    if config.metrics_enabled and config.metrics_token:
        routes.append(Route("/metrics", metrics_with_token, methods=["GET"]))
    return routes


def _listener_app(kind: str, settings: Settings) -> tuple[Starlette, ASGIApp]:
    config = settings.config
    app = Starlette(
        routes=routes_for(kind, config),
        exception_handlers={
            404: _not_found,
            405: _method_not_allowed,
            passwords.HashingBusy: _hashing_busy,
            **dict.fromkeys(UNAVAILABLE_ERRORS, _error),
            sqlalchemy.exc.DBAPIError: _error,
            Exception: _error,
        },
    )
    origins = frozenset(o for c in config.clients for o in c.allowed_origins)
    return app, OuterMiddleware(CORSMiddleware(app, origins), config)


# -- the app ----------------------------------------------------------------------------------


class ServerApp:
    """Every listener's app behind one ASGI callable, and the process lifespan: the shared
    state is built at start-up (migrations first unless told not to), with the maintenance
    and metrics-sampling tasks, and closed at shutdown."""

    def __init__(self, settings: Settings, *, migrate_first: bool = True) -> None:
        self.settings = settings
        self.migrate_first = migrate_first
        self.by_port: dict[int, ASGIApp] = {}
        self.starlettes: list[Starlette] = []
        default: ASGIApp | None = None
        for listener in listeners(settings.config):
            starlette, app = _listener_app(listener.kind, settings)
            self.starlettes.append(starlette)
            self.by_port[listener.port] = app
            default = default or app
        assert default is not None
        self.default = default
        self.state: ServerState | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        app = self.default
        server = scope.get("server")
        if server and len(self.by_port) > 1:
            app = self.by_port.get(server[1], self.default)
        await app(scope, receive, send)

    async def startup(self) -> None:
        state = await build_state(self.settings, migrate_first=self.migrate_first)
        for app in self.starlettes:
            app.state.authgear = state
        self.state = state
        self._tasks = [
            asyncio.create_task(maintain_forever(state)),
            asyncio.create_task(sample_forever(state)),
        ]

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.state is not None:
            await close_state(self.state)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:
                    log.error("start-up failed: %s", describe_exception(e))
                    await send({"type": "lifespan.startup.failed", "message": type(e).__name__})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                with contextlib.suppress(Exception):
                    await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings, *, migrate_first: bool = True) -> ServerApp:
    return ServerApp(settings, migrate_first=migrate_first)


def app_from_environment() -> ASGIApp:
    """The app of one worker process of `authgear serve --workers N` (a uvicorn factory).

    The parent process has migrated the database and put every setting in the environment.
    """
    data_dir = Path(os.environ.get("AUTHGEAR_DATA_DIR") or ".authgear")
    config = os.environ.get("AUTHGEAR_CONFIG")
    settings = load_settings(data_dir, Path(config) if config else None)
    logs.configure(settings.config.log_level, settings.config.log_format)
    return create_app(settings, migrate_first=False)
