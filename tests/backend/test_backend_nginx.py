"""Real nginx (Debian's package; scripts/test installs it) with ``auth_request`` to our resolver
in front of the example FastAPI backend in trusted-proxy mode, using the config from
examples/nginx/authgear-auth-request.conf (the one docs/backend.md shows)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from backend_support import ROOT, BackendProcess, example_backend, sdk_signed_in

from agtest.server import NATIVE, ServerProcess, free_port

CONFIG = ROOT / "examples" / "nginx" / "authgear-auth-request.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        message = "nginx is not installed (scripts/test installs Debian's nginx package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def proxied_backend(
    authgear_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendProcess]:
    backend = example_backend(
        "fastapi",
        "proxy",
        authgear_server.url,
        tmp_path_factory.mktemp("proxied"),
        "--trusted-proxies",
        "127.0.0.1",
    )
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def nginx(
    authgear_server: ServerProcess,
    proxied_backend: BackendProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    binary = nginx_binary()
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    text = CONFIG.read_text()
    for name, value in {
        "PREFIX": str(prefix),
        "LISTEN": f"127.0.0.1:{port}",
        "AUTHGEAR": f"127.0.0.1:{authgear_server.port}",
        "BACKEND": f"127.0.0.1:{proxied_backend.port}",
    }.items():
        text = text.replace("${" + name + "}", value)
    if os.geteuid() == 0:
        text = "user root;\n" + text  # workers must read the temp folder
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    cmd = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    subprocess.run([*cmd, "-t", "-q"], check=True, capture_output=True)
    proc = subprocess.Popen(
        [*cmd, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx2.get(url + "/api/public", timeout=1)
            break
        except httpx2.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError((prefix / "error.log").read_text()) from None
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def test_valid_user_passes_with_headers(
    nginx: str, authgear_server: ServerProcess, tmp_path: Path
) -> None:
    ag, sub, _ = sdk_signed_in(authgear_server, tmp_path)
    r = ag.fetch("GET", nginx + "/api/me")
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["sub"] == sub and me["source"] == "proxy"
    assert me["amr"] == ["pwd", "x_primary_password"] and me["authenticated_at"]
    assert ag.fetch("GET", nginx + "/api/admin").status_code == 403

    # Revocation through nginx takes effect at once (the resolver checks every request).
    token = ag.access_token
    record = ag.token_storage.load(ag.storage_key)
    assert record is not None
    httpx2.post(
        authgear_server.url + "/oauth2/revoke",
        data={"token": record.refresh_token, "client_id": NATIVE},
    )
    r = httpx2.get(nginx + "/api/me", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_client_sent_authgear_headers_are_stripped(
    nginx: str, authgear_server: ServerProcess, tmp_path: Path, proxied_backend: BackendProcess
) -> None:
    spoof = {
        "x-authgear-session-valid": "true",
        "x-authgear-user-id": "the-ceo",
        "x-authgear-user-roles": "admin",
        "x-authgear-user-verified": "true",
    }
    # No credentials: the spoofed headers do not make a user.
    r = httpx2.get(nginx + "/api/me", headers=spoof)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="api"'
    assert httpx2.get(nginx + "/api/admin", headers=spoof).status_code == 401
    # A real user cannot become someone else or gain a role.
    ag, sub, _ = sdk_signed_in(authgear_server, tmp_path)
    r = ag.fetch("GET", nginx + "/api/me", headers=spoof)
    assert r.status_code == 200
    assert r.json()["sub"] == sub and r.json()["roles"] == []
    assert ag.fetch("GET", nginx + "/api/admin", headers=spoof).status_code == 403
    # A bad token: the resolver says invalid; the spoofed "true" is replaced.
    r = httpx2.get(nginx + "/api/me", headers={**spoof, "authorization": "Bearer forged"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    # This is why the backend must be reachable only through nginx: asked directly, it
    # believes a peer it trusts (127.0.0.1 here) — the spoofing risk docs/backend.md describes.
    r = httpx2.get(proxied_backend.url + "/api/me", headers=spoof)
    assert r.status_code == 200 and r.json()["sub"] == "the-ceo"
