"""ASGI middleware around every listener's app: CORS for the browser SDK's endpoints, and the
outermost layer (request id, security headers, access log, metrics, the last-resort 500)."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authgear.server import metrics
from authgear.server.config import ServerConfig
from authgear.server.events import GRANT_TYPE_KEY
from authgear.server.http import client_ip
from authgear.server.lifecycle import DRAIN
from authgear.server.logs import CAUSE_LOGGED, REQUEST_ID, request_id

log = logging.getLogger("authgear.server")
access_log = logging.getLogger("authgear.access")

CORS_PATHS = frozenset(
    {
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/oauth2/token",
        "/oauth2/device_authorization",
        "/oauth2/userinfo",
        "/oauth2/revoke",
        "/oauth2/jwks",
    }
)
# Set by the HTTP layer when it gave up on a request (a body that never arrived: 408).
STATUS_OVERRIDE = "authgear.status"
# Set when the client went away: a handler's failure to read the body is then no error.
DISCONNECTED = "authgear.disconnected"
CLIENT_CLOSED = 499  # nginx's code: the client went away before the response
HSTS = b"max-age=31536000; includeSubDomains"


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


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def describe_exception(e: BaseException) -> str:
    """The type and where it was raised (our innermost frame), not the message: exception
    messages may quote request data, such as a password or a token."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "/authgear/" in f.filename] or frames
    if not ours:
        return type(e).__name__
    f = ours[-1]
    where = f.filename[f.filename.rfind("/authgear/") + 1 :]
    return f"{type(e).__name__} at {where}:{f.lineno} in {f.name}"


def server_error_response() -> Response:
    return JSONResponse(
        {"error": "server_error", "error_description": "internal server error"},
        status_code=500,
        headers={"Cache-Control": "no-store"},
    )


class OuterMiddleware:
    """The last line, on every request: a request id (the client's X-Request-ID or a new one)
    echoed back and attached to every log line; ``X-Content-Type-Options: nosniff`` on every
    response and HSTS under https; one access-log line (path only: queries can hold tokens
    such as an id_token_hint) with the client's real address behind ``trusted_proxies``;
    the metrics; an unexpected exception logged with its cause and answered with a bare 500;
    a client that went away mid-request logged as 499, not as an error."""

    def __init__(self, app: ASGIApp, config: ServerConfig) -> None:
        self.app = app
        self.metrics = config.metrics_enabled
        self.trusted = config.trusted_proxies
        self.hsts = config.secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(_header(scope, b"x-request-id"))
        token = REQUEST_ID.set(rid)
        status = 0
        disconnected = False
        start = time.perf_counter()

        async def tracking_receive() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
                scope[DISCONNECTED] = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = self._add_headers(message.get("headers", ()), rid)
            await send(message)

        try:
            try:
                await self.app(scope, tracking_receive, tracking_send)
            except Exception as e:
                if not disconnected and not scope.get(CAUSE_LOGGED):
                    log.error(
                        "internal error on %s %s: %s",
                        scope["method"],
                        metrics.route_label(scope),
                        describe_exception(e),
                        exc_info=log.isEnabledFor(logging.DEBUG),
                    )
                    scope[CAUSE_LOGGED] = True
                if not status:
                    status = 500
                    await server_error_response()(scope, receive, tracking_send)
            status = self._final_status(scope, status, disconnected)
            self._record(scope, status, time.perf_counter() - start)
        finally:
            REQUEST_ID.reset(token)

    def _add_headers(
        self, headers: Iterable[tuple[bytes, bytes]], rid: str
    ) -> list[tuple[bytes, bytes]]:
        # On the raw list: this runs on every response (MutableHeaders costs several scans).
        out = list(headers)
        names = {name.lower() for name, _ in out}
        out.append((b"x-request-id", rid.encode("latin-1")))
        if b"x-content-type-options" not in names:
            out.append((b"x-content-type-options", b"nosniff"))
        if self.hsts and b"strict-transport-security" not in names:
            out.append((b"strict-transport-security", HSTS))
        if DRAIN.draining:
            # Shutting down: each client reconnects (to another process) after this response.
            out = [(k, v) for k, v in out if k.lower() != b"connection"]
            out.append((b"connection", b"close"))
        return out

    def _final_status(self, scope: Scope, status: int, disconnected: bool) -> int:
        override = scope.get(STATUS_OVERRIDE)
        if isinstance(override, int):
            return override
        if disconnected and (status == 0 or status >= 500):
            return CLIENT_CLOSED
        if status >= 500 and not scope.get(CAUSE_LOGGED):
            log.error("%s %s answered %d", scope["method"], metrics.route_label(scope), status)
        return status

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        route = metrics.route_label(scope)
        if self.metrics:
            metrics.observe(scope["method"], route, status, elapsed)
            grant_type = scope.get(GRANT_TYPE_KEY)
            if grant_type is not None and status == 200:
                metrics.TOKENS_ISSUED.labels(grant_type).inc()
        if not access_log.isEnabledFor(logging.INFO):
            return
        ip = client_ip(Request(scope), self.trusted) or "-"
        path = scope["path"][:200]
        access_log.info(
            '%s "%s %s" %d %.1fms',
            ip,
            scope["method"],
            path,
            status,
            elapsed * 1000,
            extra={
                "client_ip": ip,
                "method": scope["method"],
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )
