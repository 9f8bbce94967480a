"""The ASGI application: routes, CORS, error handling and start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
import sqlalchemy.exc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authgear.server import housekeeping, metrics, passwords
from authgear.server.admin import admin_routes
from authgear.server.config import Settings, load_settings
from authgear.server.endpoints.authorize import authorize_endpoint
from authgear.server.endpoints.discovery import discovery_endpoint, jwks_endpoint
from authgear.server.endpoints.end_session import end_session_endpoint
from authgear.server.endpoints.login import home_page, logout_page
from authgear.server.endpoints.resolver import resolve_endpoint
from authgear.server.endpoints.revoke import revoke_endpoint
from authgear.server.endpoints.token import token_endpoint
from authgear.server.endpoints.userinfo import userinfo_endpoint
from authgear.server.keys import load_or_create_keys, reload_keys
from authgear.server.ratelimit import (
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    SQLRateLimiter,
)
from authgear.server.sessions import now_s
from authgear.server.signin.routes import signin_routes
from authgear.server.state import ServerState, get_state
from authgear.server.storage import migrate
from authgear.server.storage.sql import SQLRepository
from authgear.server.ui import busy_page

log = logging.getLogger("authgear.server")
access_log = logging.getLogger("authgear.access")

STATIC = Path(__file__).parent / "static"
CORS_PATHS = frozenset(
    {
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/oauth2/token",
        "/oauth2/userinfo",
        "/oauth2/revoke",
        "/oauth2/jwks",
    }
)


class CORSMiddleware:
    """CORS with credentials for the configured origins, on the endpoints a browser SDK calls."""

    def __init__(self, app: ASGIApp, origins: frozenset[str]) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in CORS_PATHS:
            await self.app(scope, receive, send)
            return
        origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
        allowed = origin is not None and origin in self.origins
        if scope["method"] == "OPTIONS" and origin is not None:
            headers = {"Vary": "Origin"}
            if allowed:
                headers.update(
                    {
                        "Access-Control-Allow-Origin": origin,
                        "Access-Control-Allow-Credentials": "true",
                        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                        "Access-Control-Allow-Headers": (
                            "Authorization, Content-Type, X-Authgear-Platform, "
                            "X-Authgear-SDK-Version"
                        ),
                        "Access-Control-Max-Age": "600",
                    }
                )
            await PlainTextResponse("", status_code=204 if allowed else 403, headers=headers)(
                scope, receive, send
            )
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"vary", b"Origin"))
                if allowed and origin is not None:
                    headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
                    headers.append((b"access-control-allow-credentials", b"true"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_cors)


class OuterMiddleware:
    """The last line: one access-log line per request (path only: queries can hold tokens such
    as an id_token_hint), and an unexpected exception becomes a bare 500 without detail."""

    def __init__(self, app: ASGIApp, *, metrics: bool) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        start = time.perf_counter()

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:
            # The type only: exception messages may quote request data.
            log.error(
                "internal error on %s %s: %s",
                scope["method"],
                scope["path"],
                type(e).__name__,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            if not status:
                status = 500
                await _server_error_response()(scope, receive, send)
        elapsed = time.perf_counter() - start
        if self.metrics:
            metrics.observe(scope["method"], scope["path"], status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access_log.info(
                '%s "%s %s" %d %.1fms',
                client[0] if client else "-",
                scope["method"],
                scope["path"][:200],
                status,
                elapsed * 1000,
            )


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not_found"}, status_code=404)


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "method_not_allowed"}, status_code=405)


def _server_error_response() -> Response:
    return JSONResponse(
        {"error": "server_error", "error_description": "internal server error"},
        status_code=500,
        headers={"Cache-Control": "no-store"},
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    return _server_error_response()


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


async def _unavailable(request: Request, exc: Exception) -> Response:
    away = isinstance(exc, UNAVAILABLE_ERRORS) or getattr(exc, "connection_invalidated", False)
    if away:
        metrics.DB_UNAVAILABLE.inc()
        log.warning("database unavailable: %s", type(exc).__name__)
        return JSONResponse(
            {"error": "temporarily_unavailable", "error_description": "try again shortly"},
            status_code=503,
            headers={"Cache-Control": "no-store", "Retry-After": "1"},
        )
    return _server_error_response()


async def _hashing_busy(request: Request, exc: Exception) -> Response:
    retry_after = exc.retry_after if isinstance(exc, passwords.HashingBusy) else 5
    return busy_page(get_state(request), request, retry_after)


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request) -> Response:
    """Readiness: the database answers too."""
    state = get_state(request)
    try:
        await state.repo.ping()
    except Exception as e:
        log.warning("not ready: %s", type(e).__name__)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def metrics_endpoint(request: Request) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


async def build_state(settings: Settings, *, migrate_first: bool = True) -> ServerState:
    url = settings.database_url
    hashing = settings.config.password_hashing
    passwords.configure(hashing.max_concurrent, hashing.queue_timeout)
    if migrate_first:
        await anyio.to_thread.run_sync(migrate.upgrade, url)
    repo = SQLRepository.open(url)
    keys = await load_or_create_keys(repo)
    rotation_key = await repo.get_or_create_secret(
        "refresh_rotation_key", secrets.token_hex(32), now_s()
    )
    csrf_key = await repo.get_or_create_secret("csrf_key", secrets.token_hex(32), now_s())
    return ServerState(
        settings=settings,
        repo=repo,
        keys=keys,
        limiter=make_limiter(settings, repo),
        rotation_key=bytes.fromhex(rotation_key),
        csrf_key=bytes.fromhex(csrf_key),
    )


def make_limiter(settings: Settings, repo: SQLRepository) -> RateLimiter:
    """Memory for one process on SQLite; shared (Redis, else the database) otherwise."""
    config = settings.config
    enabled = config.rate_limits.enabled
    if config.redis_url:
        return RedisRateLimiter(config.redis_url, enabled)
    if config.workers > 1 or not settings.is_sqlite:
        dialect = "sqlite" if settings.is_sqlite else "postgresql"
        return SQLRateLimiter(repo.engine, dialect, enabled)
    return MemoryRateLimiter(enabled)


async def maintain_forever(state: ServerState) -> None:
    """Re-read signing keys every key_refresh_interval; purge expired rows every
    purge_interval (10 minutes by default)."""
    interval = state.config.key_refresh_interval
    last_purge = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        try:
            state.keys = await reload_keys(state.repo, state.keys)
            if time.monotonic() - last_purge >= state.config.purge_interval:
                last_purge = time.monotonic()
                await housekeeping.purge(state, now_s())
        except Exception as e:
            log.warning("maintenance failed: %s", type(e).__name__)


def resolver_routes() -> list[BaseRoute]:
    return [
        Route("/_resolver/resolve", resolve_endpoint, methods=["GET", "HEAD"]),
        Route("/resolve", resolve_endpoint, methods=["GET", "HEAD"]),
    ]


def create_app(
    settings: Settings,
    *,
    state: ServerState | None = None,
    resolver_only: bool = False,
    migrate_first: bool = True,
) -> ASGIApp:
    """The server. Builds its own state at start-up unless given one (shared by the apps of
    one process); ``resolver_only`` builds the app for the separate resolver port."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if state is not None:
            app.state.authgear = state
            yield
            return
        own = await build_state(settings, migrate_first=migrate_first)
        app.state.authgear = own
        purger = asyncio.create_task(maintain_forever(own))
        try:
            yield
        finally:
            purger.cancel()
            await own.repo.close()

    routes = [
        *resolver_routes(),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]
    if settings.config.metrics_enabled:
        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    if not resolver_only:
        routes += [
            Route("/.well-known/openid-configuration", discovery_endpoint, methods=["GET"]),
            Route("/.well-known/oauth-authorization-server", discovery_endpoint, methods=["GET"]),
            Route("/oauth2/authorize", authorize_endpoint, methods=["GET", "POST"]),
            Route("/oauth2/token", token_endpoint, methods=["POST"]),
            Route("/oauth2/userinfo", userinfo_endpoint, methods=["GET", "POST"]),
            Route("/oauth2/revoke", revoke_endpoint, methods=["POST"]),
            Route("/oauth2/jwks", jwks_endpoint, methods=["GET"]),
            Route("/oauth2/end_session", end_session_endpoint, methods=["GET", "POST"]),
            *signin_routes(),
            Route("/logout", logout_page, methods=["POST"]),
            Route("/", home_page, methods=["GET"]),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
            *admin_routes(),
        ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            404: _not_found,
            405: _method_not_allowed,
            passwords.HashingBusy: _hashing_busy,
            **dict.fromkeys(UNAVAILABLE_ERRORS, _unavailable),
            sqlalchemy.exc.DBAPIError: _unavailable,
            Exception: _server_error,
        },
    )
    origins = frozenset(o for c in settings.config.clients for o in c.allowed_origins)
    return OuterMiddleware(CORSMiddleware(app, origins), metrics=settings.config.metrics_enabled)


def app_from_environment() -> ASGIApp:
    """The app of one worker process of `authgear serve --workers N` (a uvicorn factory).

    The parent process has migrated the database and put every setting in the environment.
    """
    data_dir = Path(os.environ.get("AUTHGEAR_DATA_DIR") or ".authgear")
    config = os.environ.get("AUTHGEAR_CONFIG")
    settings = load_settings(data_dir, Path(config) if config else None)
    logging.basicConfig(
        level=settings.config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return create_app(settings, migrate_first=False)
