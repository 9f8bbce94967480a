"""The ASGI application: routes, CORS, error handling and start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authgear.server.admin import admin_routes
from authgear.server.config import Settings
from authgear.server.endpoints.authorize import authorize_endpoint
from authgear.server.endpoints.discovery import discovery_endpoint, jwks_endpoint
from authgear.server.endpoints.end_session import end_session_endpoint
from authgear.server.endpoints.login import home_page, login_page, logout_page, signup_page
from authgear.server.endpoints.resolver import resolve_endpoint
from authgear.server.endpoints.revoke import revoke_endpoint
from authgear.server.endpoints.token import token_endpoint
from authgear.server.endpoints.userinfo import userinfo_endpoint
from authgear.server.keys import load_or_create_keys
from authgear.server.ratelimit import RateLimiter
from authgear.server.sessions import now_s
from authgear.server.state import ServerState
from authgear.server.storage import migrate
from authgear.server.storage.sql import SQLRepository

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
PURGE_INTERVAL = 600


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

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
        if access_log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access_log.info(
                '%s "%s %s" %d %.1fms',
                client[0] if client else "-",
                scope["method"],
                scope["path"][:200],
                status,
                (time.perf_counter() - start) * 1000,
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


async def build_state(settings: Settings) -> ServerState:
    url = settings.database_url
    await anyio.to_thread.run_sync(migrate.upgrade, url)
    repo = SQLRepository.open(url)
    keys = await load_or_create_keys(repo)
    rotation_key = await repo.get_or_create_secret(
        "refresh_rotation_key", secrets.token_hex(32), now_s()
    )
    return ServerState(
        settings=settings,
        repo=repo,
        keys=keys,
        limiter=RateLimiter(settings.config.rate_limits.enabled),
        rotation_key=bytes.fromhex(rotation_key),
    )


async def purge_forever(state: ServerState) -> None:
    while True:
        await asyncio.sleep(PURGE_INTERVAL)
        try:
            await state.repo.purge_expired(now_s())
        except Exception as e:
            log.warning("purging expired rows failed: %s", type(e).__name__)


def resolver_routes() -> list[BaseRoute]:
    return [
        Route("/_resolver/resolve", resolve_endpoint, methods=["GET", "HEAD"]),
        Route("/resolve", resolve_endpoint, methods=["GET", "HEAD"]),
    ]


def create_app(
    settings: Settings, *, state: ServerState | None = None, resolver_only: bool = False
) -> ASGIApp:
    """The server. Builds its own state at start-up unless given one (shared by the apps of
    one process); ``resolver_only`` builds the app for the separate resolver port."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if state is not None:
            app.state.authgear = state
            yield
            return
        own = await build_state(settings)
        app.state.authgear = own
        purger = asyncio.create_task(purge_forever(own))
        try:
            yield
        finally:
            purger.cancel()
            await own.repo.close()

    routes = resolver_routes()
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
            Route("/login", login_page, methods=["GET", "POST"]),
            Route("/signup", signup_page, methods=["GET", "POST"]),
            Route("/logout", logout_page, methods=["POST"]),
            Route("/", home_page, methods=["GET"]),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
            *admin_routes(),
        ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _not_found, 405: _method_not_allowed, Exception: _server_error},
    )
    origins = frozenset(o for c in settings.config.clients for o in c.allowed_origins)
    return OuterMiddleware(CORSMiddleware(app, origins))
