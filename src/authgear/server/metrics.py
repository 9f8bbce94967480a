"""Prometheus metrics: requests by path and status, latency, database outages.

With several worker processes, `authgear serve` sets PROMETHEUS_MULTIPROC_DIR before they start,
so any worker's /metrics reports the sum over all of them.
"""

from __future__ import annotations

import os

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

# Paths with their own label; anything else is "other", so labels stay few.
KNOWN_PATHS = frozenset(
    {
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/oauth2/authorize",
        "/oauth2/token",
        "/oauth2/userinfo",
        "/oauth2/revoke",
        "/oauth2/jwks",
        "/oauth2/end_session",
        "/_resolver/resolve",
        "/resolve",
        "/login",
        "/signup",
        "/healthz",
        "/readyz",
        "/metrics",
    }
)

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


def path_label(path: str) -> str:
    return path if path in KNOWN_PATHS else "other"


def observe(method: str, path: str, status: int, seconds: float) -> None:
    label = path_label(path)
    REQUESTS.labels(method, label, str(status)).inc()
    LATENCY.labels(label).observe(seconds)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST
