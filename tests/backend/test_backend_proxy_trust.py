"""Trusted-proxy mode believes only the proxy (issue 18.6).

The attack: uvicorn, run with its default flags, rewrites the peer address of requests from
127.0.0.1 from ``X-Forwarded-For``; Werkzeug's ProxyFix does the same to ``REMOTE_ADDR``. A
client that writes ``X-Forwarded-For: 10.9.9.9`` next to forged ``x-authgear-*`` headers looked
like the trusted proxy at 10.0.0.0/8 and became user "victim" with role admin. Now a peer that a
forwarding header names is unknown, and a shared secret between proxy and backend proves the
proxy whatever the addresses.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from backend_support import EXAMPLES, BackendProcess, example_backend
from test_backend_adapters import app_process

from agtest.server import ServerProcess
from authgear.backend import MissingCredentials, SimpleRequest, TrustedProxyHeaders
from authgear.backend._request import socket_peer

SECRET = "proxy-secret-for-tests-0123456789"
FORGED = {
    "x-authgear-session-valid": "true",
    "x-authgear-user-id": "victim",
    "x-authgear-user-roles": "admin",
    "x-authgear-credential": "bearer",
    "authorization": "Bearer anything",
}


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy-trust")


@pytest.fixture(scope="module")
def default_uvicorn(authgear_server: ServerProcess, module_tmp: Path) -> Iterator[BackendProcess]:
    """The example in proxy mode under `uvicorn` with its default flags (proxy headers on,
    X-Forwarded-For trusted from 127.0.0.1), trusting the proxy network 10.0.0.0/8."""
    argv = [sys.executable, "-m", "uvicorn", "fastapi_backend:app"]
    argv += ["--app-dir", str(EXAMPLES), "--host", "127.0.0.1"]
    env = {
        "AUTHGEAR_BACKEND_MODE": "proxy",
        "AUTHGEAR_ENDPOINT": authgear_server.url,
        "AUTHGEAR_TRUSTED_PROXIES": "10.0.0.0/8",
    }
    backend = BackendProcess(argv, module_tmp / "uvicorn-default.log", env=env).start()
    yield backend
    backend.stop()


@pytest.mark.parametrize(
    "forwarded",
    [
        [("x-forwarded-for", "10.9.9.9")],
        [("x-forwarded-for", "10.9.9.9, 127.0.0.1")],
        [("x-forwarded-for", "10.9.9.9:4444")],
        [("x-forwarded-for", "192.0.2.1"), ("x-forwarded-for", "10.9.9.9")],
    ],
    ids=["plain", "chain", "with-port", "two-header-lines"],
)
def test_attack_forged_x_forwarded_for_on_default_uvicorn_is_refused(
    default_uvicorn: BackendProcess, forwarded: list[tuple[str, str]]
) -> None:
    headers = [*FORGED.items(), *forwarded]
    for path in ("/api/me", "/api/admin"):
        r = httpx2.get(default_uvicorn.url + path, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == 'Bearer realm="api"'
    assert "named in a forwarding header" in default_uvicorn.log()
    assert "--no-proxy-headers" in default_uvicorn.log()


def test_attack_forged_x_forwarded_for_through_werkzeug_proxyfix_is_refused(
    authgear_server: ServerProcess, module_tmp: Path
) -> None:
    app = app_process("flask-proxyfix", "proxy", authgear_server, module_tmp)
    try:
        r = httpx2.get(app.url + "/api/me", headers={**FORGED, "x-forwarded-for": "10.9.9.9"})
        assert r.status_code == 401, r.text
        # Not even the peer ProxyFix saw (127.0.0.1) is trusted here: the original address
        # is read back, so a request without the header is refused the same way.
        assert httpx2.get(app.url + "/api/me", headers=FORGED).status_code == 401
    finally:
        app.stop()


@pytest.fixture(scope="module")
def secret_backend(authgear_server: ServerProcess, module_tmp: Path) -> Iterator[BackendProcess]:
    """Proxy mode with a shared secret only (no address list), as the Traefik and Caddy
    configs use it."""
    backend = example_backend(
        "fastapi", "proxy", authgear_server.url, module_tmp, env={"AUTHGEAR_PROXY_SECRET": SECRET}
    )
    yield backend
    backend.stop()


def test_attack_forged_headers_without_the_proxy_secret_are_refused(
    secret_backend: BackendProcess,
) -> None:
    wrong = SECRET[:-1] + ("x" if SECRET[-1] != "x" else "y")
    for secret in (None, "", wrong, SECRET + "x", SECRET[:-1], SECRET.upper()):
        headers = dict(FORGED)
        if secret is not None:
            headers["x-authgear-proxy-secret"] = secret
        r = httpx2.get(secret_backend.url + "/api/me", headers=headers)
        assert r.status_code == 401, (secret, r.text)
    # The proxy, which knows the secret, is believed.
    r = httpx2.get(
        secret_backend.url + "/api/admin", headers={**FORGED, "x-authgear-proxy-secret": SECRET}
    )
    assert r.status_code == 200, r.text
    assert "no or wrong proxy secret" in secret_backend.log()


def test_proxy_secret_is_checked_before_anything_and_configured_safely() -> None:
    with pytest.raises(ValueError, match="16 characters"):
        TrustedProxyHeaders(proxy_secret="short")
    with pytest.raises(ValueError, match="proxy_secret"):
        TrustedProxyHeaders()
    auth = TrustedProxyHeaders(proxy_secret=SECRET, trusted_proxies=["10.0.0.0/8"])
    assert SECRET not in repr(auth)
    # Both proofs: the right secret from the wrong peer is still refused.
    with pytest.raises(MissingCredentials):
        auth.authenticate(
            SimpleRequest({**FORGED, "x-authgear-proxy-secret": SECRET}, peer="192.0.2.7")
        )
    user = auth.authenticate(
        SimpleRequest({**FORGED, "x-authgear-proxy-secret": SECRET}, peer="10.1.1.1")
    )
    assert user.kind == "user"


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("10.9.9.9", {"x-forwarded-for": "10.9.9.9"}, None),
        ("10.9.9.9", {"x-forwarded-for": " 203.0.113.5 , 10.9.9.9:80"}, None),
        ("2001:db8::1", {"x-forwarded-for": "[2001:db8::1]:443"}, None),
        ("2001:db8::1", {"x-forwarded-for": "2001:DB8::1"}, None),
        ("10.9.9.9", {"forwarded": 'for="10.9.9.9:1";proto=https'}, None),
        ("10.9.9.9", {"x-real-ip": "10.9.9.9"}, None),
        ("10.0.0.2", {"x-forwarded-for": "203.0.113.5"}, "10.0.0.2"),
        ("10.0.0.2", {"x-forwarded-for": "10.0.0.21"}, "10.0.0.2"),
        ("10.0.0.2", {"forwarded": "by=10.0.0.2;for=203.0.113.5"}, "10.0.0.2"),
        ("10.0.0.2", {}, "10.0.0.2"),
    ],
)
def test_socket_peer_named_by_a_forwarding_header_is_unknown(
    peer: str, headers: dict[str, str], expected: str | None
) -> None:
    assert socket_peer(peer, headers.values()) == expected
