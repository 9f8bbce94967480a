"""Authentication events as log lines and metrics, from one place.

Endpoints call these with one line each. A line names the event, the user and client ids and
the client's address, never a password, token, code or email address (the attempted email of
a failed sign-in would put other people's addresses, and typos of passwords, into the logs).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request

from authgear.server import metrics
from authgear.server.http import client_ip
from authgear.server.state import get_state

log = logging.getLogger("authgear.events")
GRANT_TYPES = frozenset(
    {
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:device_code",
    }
)
GRANT_TYPE_KEY = "authgear.grant_type"


def _emit(level: int, event: str, **fields: Any) -> None:
    shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    log.log(level, "%s %s", event, shown, extra={"event": event, **fields})


def _ip(request: Request) -> str | None:
    return client_ip(request, get_state(request).config.trusted_proxies)


def sign_in(request: Request, user_id: str) -> None:
    metrics.SIGN_INS.labels("success").inc()
    _emit(logging.INFO, "sign_in.success", user_id=user_id, client_ip=_ip(request))


def sign_in_failed(request: Request, user_id: str | None) -> None:
    """A wrong email or password, or a disabled account (``user_id`` when there is one)."""
    metrics.SIGN_INS.labels("failure").inc()
    _emit(logging.INFO, "sign_in.failure", user_id=user_id, client_ip=_ip(request))


def locked_out(request: Request) -> None:
    metrics.LOCKOUTS.inc()
    _emit(logging.WARNING, "sign_in.locked_out", client_ip=_ip(request))


def device_code_failed(request: Request) -> None:
    """A user code typed at /device that names no pending code (never the code itself)."""
    metrics.DEVICE_USER_CODES.labels("wrong").inc()
    _emit(logging.INFO, "device.user_code_failure", client_ip=_ip(request))


def device_code_refused(request: Request) -> None:
    """A user code not even checked: this network typed too many wrong ones."""
    metrics.DEVICE_USER_CODES.labels("refused").inc()
    _emit(logging.WARNING, "device.user_code_limited", client_ip=_ip(request))


def device_code_entered(request: Request) -> None:
    metrics.DEVICE_USER_CODES.labels("right").inc()


def device_decided(request: Request, code_id: str, user_id: str, approved: bool) -> None:
    decision = "approved" if approved else "denied"
    metrics.DEVICE_DECISIONS.labels(decision).inc()
    _emit(
        logging.INFO,
        f"device.{decision}",
        device_authorization_id=code_id,
        user_id=user_id,
        client_ip=_ip(request),
    )


def refresh_reuse(request: Request, grant_id: str, user_id: str, client_id: str) -> None:
    metrics.REFRESH_REUSE.inc()
    _emit(
        logging.WARNING,
        "refresh_token.reuse_detected",
        session_id=grant_id,
        user_id=user_id,
        client_id=client_id,
        client_ip=_ip(request),
    )


def session_revoked(session_id: str, kind: str, user_id: str | None, by: str) -> None:
    """``by``: who ended it (cli, api_key, portal, self, client)."""
    metrics.SESSIONS_REVOKED.labels(by).inc()
    _emit(
        logging.INFO,
        "session.revoked",
        session_id=session_id,
        kind=kind,
        user_id=user_id,
        by=by,
    )


def token_request(request: Request, grant_type: str) -> None:
    """Note the grant type; the access log counts the token response once it is sent."""
    request.scope[GRANT_TYPE_KEY] = grant_type if grant_type in GRANT_TYPES else "other"
