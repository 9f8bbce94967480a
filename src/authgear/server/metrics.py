"""Prometheus metrics: requests by route and status, latency, auth events, limits, the
database pool, Redis, connections and the process itself.

With several worker processes, `authgear serve` sets PROMETHEUS_MULTIPROC_DIR before they start,
so any worker's /metrics reports the sum over all of them (gauges: the sum of the live
workers', process gauges one series per worker ``pid``).

Requests are labelled by route template (``/portal/users/{user_id}``), never by raw path, so
the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client.process_collector import ProcessCollector
from starlette.routing import Mount

REQUESTS = Counter(
    "authgear_http_requests_total", "HTTP requests answered", ["method", "path", "status"]
)
LATENCY = Histogram(
    "authgear_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DB_UNAVAILABLE = Counter(
    "authgear_database_unavailable_total", "Requests answered 503 because the database was away"
)
TOKENS_ISSUED = Counter(
    "authgear_tokens_issued_total", "Token responses by grant type", ["grant_type"]
)
SIGN_INS = Counter(
    "authgear_sign_ins_total", "Password sign-ins by result (success, failure)", ["result"]
)
LOCKOUTS = Counter(
    "authgear_sign_in_lockouts_total", "Sign-ins refused because the account is locked out"
)
RATE_LIMITED = Counter(
    "authgear_rate_limited_total", "Events refused by a rate limit, by limit", ["bucket"]
)
DEVICE_USER_CODES = Counter(
    "authgear_device_user_codes_total",
    "User codes typed at /device by result (right, wrong, refused: over the per-IP limit)",
    ["result"],
)
DEVICE_DECISIONS = Counter(
    "authgear_device_decisions_total", "Device sign-ins approved or denied", ["decision"]
)
REFRESH_REUSE = Counter(
    "authgear_refresh_token_reuse_total",
    "Rotated refresh tokens used again (the grant was ended: possible theft)",
)
SESSIONS_REVOKED = Counter(
    "authgear_sessions_revoked_total", "Sessions ended by revocation, by who", ["by"]
)
REDIS_ERRORS = Counter(
    "authgear_redis_errors_total", "Redis commands that failed (limits fell back to the database)"
)
HTTP_REFUSED = Counter(
    "authgear_http_refused_total",
    "Requests or connections refused by the HTTP limits, by reason",
    ["reason"],
)
HTTP_CONNECTIONS = Gauge(
    "authgear_http_connections", "Open client connections", multiprocess_mode="livesum"
)
DB_POOL_IN_USE = Gauge(
    "authgear_db_pool_connections_in_use",
    "Database connections checked out",
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "authgear_db_pool_waiting",
    "Requests waiting for a database connection",
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "authgear_db_pool_size",
    "Database connections a process may open (pool size + overflow)",
    multiprocess_mode="livesum",
)
DRAINING = Gauge(
    "authgear_draining", "1 while the process is shutting down", multiprocess_mode="livemax"
)
_PROCESS = {
    name: Gauge(f"authgear_{name}", text, multiprocess_mode="liveall")
    for name, text in (
        ("process_resident_memory_bytes", "Resident memory of a server process"),
        ("process_cpu_seconds_total", "CPU time used by a server process"),
        ("process_open_fds", "Open file descriptors of a server process"),
        ("process_max_fds", "File-descriptor limit of a server process"),
        ("process_start_time_seconds", "Start time of a server process (Unix time)"),
    )
}
_process_collector = ProcessCollector(registry=None)

PURGED_ROWS = Counter(
    "authgear_purged_rows_total", "Expired rows deleted by the periodic purge", ["table"]
)
PURGE_BATCHES = Counter(
    "authgear_purge_batches_total", "Transactions the purge took (each deletes a small batch)"
)
HASHING_LIMIT = Gauge(
    "authgear_password_hashing_limit",
    "Password hashes or checks allowed at once per process",
    multiprocess_mode="max",
)
HASHING_IN_PROGRESS = Gauge(
    "authgear_password_hashing_in_progress",
    "Password hashes or checks running now",
    multiprocess_mode="livesum",
)
HASHING_PEAK = Gauge(
    "authgear_password_hashing_peak",
    "Most password hashes or checks that ran at once in one process since it started",
    multiprocess_mode="max",
)
HASHING_REJECTED = Counter(
    "authgear_password_hashing_rejected_total",
    "Password checks refused with 503: no hashing slot freed up in time",
)


def route_label(scope: MutableMapping[str, Any]) -> str:
    """The route template the router matched (``/portal/users/{user_id}``); "other" when
    nothing did (a 404), so a client cannot create series."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "other"
    if isinstance(route, Mount):
        # A mount whose own routes matched nothing, or a static-files mount.
        return path or "/"
    return f"{scope.get('root_path', '')}{path}" or "/"


def observe(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(route).observe(seconds)


def sample(*, pool: Any = None, connections: int | None = None) -> None:
    """Gauges read from live state: the pool's counters, open connections, the process."""
    if pool is not None:
        DB_POOL_IN_USE.set(pool.in_use)
        DB_POOL_WAITING.set(pool.waiting)
        DB_POOL_SIZE.set(pool.size)
    if connections is not None:
        HTTP_CONNECTIONS.set(connections)
    for family in _process_collector.collect():
        for s in family.samples:
            gauge = _PROCESS.get(s.name)
            if gauge is not None:
                gauge.set(s.value)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST
