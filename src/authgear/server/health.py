"""Liveness, readiness (each dependency) and the Prometheus metrics endpoint."""

from __future__ import annotations

import asyncio
import hmac
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from authgear.server import metrics
from authgear.server.http import bearer_token
from authgear.server.lifecycle import DRAIN
from authgear.server.logs import CAUSE_LOGGED
from authgear.server.state import get_state

log = logging.getLogger("authgear.server")
NO_STORE = {"Cache-Control": "no-store"}
PING_TIMEOUT = 3.0


async def healthz(request: Request) -> Response:
    """Liveness: the process answers (whatever its dependencies do)."""
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


async def readyz(request: Request) -> Response:
    """Readiness, with each dependency: 503 while the database is away or the process is
    shutting down. Redis away is "degraded" but ready: rate limits fall back to the
    database, so taking every process out of rotation would only make an outage."""
    state = get_state(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(state.repo.ping(), PING_TIMEOUT)
        checks["database"] = "ok"
    except Exception as e:
        log.warning("not ready: database unavailable (%s)", type(e).__name__)
        checks["database"] = "unavailable"
    try:
        checks.update(await asyncio.wait_for(state.limiter.status(), PING_TIMEOUT))
    except Exception as e:
        checks["rate_limits"] = f"unavailable ({type(e).__name__})"
    if DRAIN.draining:
        checks["shutdown"] = "draining"
    ready = checks["database"] == "ok" and not DRAIN.draining
    if not ready:
        request.scope[CAUSE_LOGGED] = True
        status = "draining" if DRAIN.draining else "unavailable"
    else:
        status = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
    return JSONResponse(
        {"status": status, "checks": checks}, status_code=200 if ready else 503, headers=NO_STORE
    )


async def metrics_endpoint(request: Request) -> Response:
    """/metrics on its own listener."""
    state = get_state(request)
    metrics.sample(pool=state.repo.pool_stats())
    body, content_type = metrics.render()
    return Response(body, media_type=content_type, headers=NO_STORE)


async def metrics_with_token(request: Request) -> Response:
    """/metrics on the main listener: only with ``Authorization: Bearer <metrics_token>``."""
    expected = get_state(request).config.metrics_token or ""
    presented = bearer_token(request) or ""
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        return JSONResponse(
            {"error": "unauthorized"},
            status_code=401,
            headers={**NO_STORE, "WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return await metrics_endpoint(request)
