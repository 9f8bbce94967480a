"""Each adapter as a real server process against our server: Starlette middleware (required,
excluded paths, WebSocket), FastAPI (roles, scopes, optional user, module-level dependencies),
Flask, Django (WSGI and ASGI), the resolver with a session cookie, and trusted-proxy mode."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from backend_support import HERE, PASSWORD, BackendProcess, sdk_signed_in

from agtest.server import Browser, ServerProcess, new_email, tokens_for
from authgear.backend import MissingCredentials, SimpleRequest, TrustedProxyHeaders

FULL_ACCESS = "https://authgear.com/scopes/full-access"


def app_process(app: str, mode: str, server: ServerProcess, tmp: Path) -> BackendProcess:
    argv = [sys.executable, str(HERE / "apps.py"), "--app", app, "--mode", mode]
    argv += ["--endpoint", server.url]
    return BackendProcess(argv, tmp / f"{app}-{mode}.log").start()


@pytest.fixture(scope="module")
def admin_token(authgear_server: ServerProcess) -> str:
    email = new_email()
    authgear_server.create_user(email, PASSWORD, "--role", "admin")
    from agtest.server import exchange, login

    cb, flow, browser = login(authgear_server, email, PASSWORD)
    browser.close()
    r = exchange(authgear_server, cb["code"], flow)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture(scope="module")
def user_token(authgear_server: ServerProcess) -> str:
    tokens, _ = tokens_for(authgear_server)
    return str(tokens["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_fastapi_roles_and_scopes(
    fastapi_jwt: BackendProcess,
    fastapi_resolver: BackendProcess,
    authgear_server: ServerProcess,
    admin_token: str,
    user_token: str,
) -> None:
    for backend in (fastapi_jwt, fastapi_resolver):
        r = httpx2.get(backend.url + "/api/admin", headers=bearer(user_token))
        assert r.status_code == 403, r.text
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        r = httpx2.get(backend.url + "/api/admin", headers=bearer(admin_token))
        assert r.status_code == 200, r.text
        me = httpx2.get(backend.url + "/api/me", headers=bearer(admin_token)).json()
        assert me["roles"] == ["admin"]
    # Scopes are in the JWT only.
    r = httpx2.get(fastapi_jwt.url + "/api/write", headers=bearer(user_token))
    assert r.status_code == 200
    narrow, _ = tokens_for(authgear_server, scope="openid offline_access")
    r = httpx2.get(fastapi_jwt.url + "/api/write", headers=bearer(narrow["access_token"]))
    assert r.status_code == 403
    challenge = r.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and f'scope="{FULL_ACCESS}"' in challenge


def test_flask_roles(flask_resolver: BackendProcess, admin_token: str, user_token: str) -> None:
    r = httpx2.get(flask_resolver.url + "/api/admin", headers=bearer(user_token))
    assert r.status_code == 403
    assert r.json()["error"] == "insufficient_scope"
    assert (
        httpx2.get(flask_resolver.url + "/api/admin", headers=bearer(admin_token)).status_code
        == 200
    )
    assert httpx2.get(flask_resolver.url + "/api/hello").json() == {"message": "hello, stranger"}
    r = httpx2.get(flask_resolver.url + "/api/me")
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="api"'


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="module")
def starlette_app(authgear_server: ServerProcess, module_tmp: Path) -> Iterator[BackendProcess]:
    p = app_process("starlette", "jwt", authgear_server, module_tmp)
    yield p
    p.stop()


def test_starlette_middleware_required(
    starlette_app: BackendProcess, user_token: str, authgear_server: ServerProcess
) -> None:
    url = starlette_app.url
    assert httpx2.get(url + "/health").status_code == 200
    r = httpx2.get(url + "/api/me")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="starlette"'
    assert r.json()["error"] == "unauthorized"
    r = httpx2.get(url + "/api/me", headers=bearer("x.y.z"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    r = httpx2.get(url + "/api/me", headers=bearer(user_token))
    assert r.status_code == 200 and r.json()["source"] == "jwt"
    # authenticated_user() gives endpoints (async, or sync in a worker thread) the same user.
    for path in ("/api/me-context", "/api/me-context-sync"):
        ctx = httpx2.get(url + path, headers=bearer(user_token))
        assert ctx.status_code == 200 and ctx.json() == r.json()


async def test_starlette_websocket(starlette_app: BackendProcess, user_token: str) -> None:
    import websockets  # uvicorn[standard] brings it

    ws_url = starlette_app.url.replace("http://", "ws://") + "/ws"
    async with websockets.connect(ws_url, additional_headers=bearer(user_token)) as ws:
        sub = await ws.recv()
        assert sub
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(ws_url):
            pass


def test_fastapi_module_dependencies_with_middleware(
    authgear_server: ServerProcess, module_tmp: Path, admin_token: str, user_token: str
) -> None:
    p = app_process("fastapi-mw", "resolver", authgear_server, module_tmp)
    try:
        assert httpx2.get(p.url + "/api/hello").json() == {"sub": None}
        assert httpx2.get(p.url + "/api/hello", headers=bearer(user_token)).json()["sub"]
        r = httpx2.get(p.url + "/api/hello", headers=bearer("nope"))
        assert r.status_code == 401
        assert httpx2.get(p.url + "/api/admin", headers=bearer(user_token)).status_code == 403
        assert httpx2.get(p.url + "/api/admin", headers=bearer(admin_token)).status_code == 200
        assert httpx2.get(p.url + "/api/admin").status_code == 401
    finally:
        p.stop()


@pytest.mark.parametrize(
    ("server", "mode"),
    [("wsgi", "jwt"), ("wsgi", "resolver"), ("asgi", "jwt"), ("asgi", "resolver")],
)
def test_django(
    server: str,
    mode: str,
    authgear_server: ServerProcess,
    module_tmp: Path,
    admin_token: str,
    user_token: str,
) -> None:
    p = app_process(f"django-{server}", mode, authgear_server, module_tmp)
    try:
        assert httpx2.get(p.url + "/api/public").status_code == 200
        r = httpx2.get(p.url + "/api/me")
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="django"'
        r = httpx2.get(p.url + "/api/me", headers=bearer("a.b.c"))
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        r = httpx2.get(p.url + "/api/me", headers=bearer(user_token))
        assert r.status_code == 200 and r.json()["source"] == mode
        assert httpx2.get(p.url + "/api/admin", headers=bearer(user_token)).status_code == 403
        assert httpx2.get(p.url + "/api/admin", headers=bearer(admin_token)).status_code == 200
    finally:
        p.stop()


def test_resolver_with_session_cookie(
    fastapi_resolver: BackendProcess, authgear_server: ServerProcess, tmp_path: Path
) -> None:
    """A browser's IdP session cookie (same site as the backend) works in resolver mode."""
    email = new_email()
    authgear_server.create_user(email, PASSWORD)
    browser = Browser(authgear_server.url)
    try:
        page = browser.http.get("/login")
        assert page.status_code == 200
        r = browser.submit("/login", email, PASSWORD)
        assert r.status_code in (302, 303), r.text[:300]
        session = browser.http.cookies.get("session")
        assert session
    finally:
        browser.close()
    r = httpx2.get(fastapi_resolver.url + "/api/me", cookies={"session": session})
    assert r.status_code == 200, r.text
    assert r.json()["amr"] == ["pwd", "x_primary_password"]
    r = httpx2.get(fastapi_resolver.url + "/api/me", cookies={"session": "forged"})
    assert r.status_code == 401


def test_sdk_fetch_through_adapters(
    fastapi_jwt: BackendProcess,
    flask_jwt: BackendProcess,
    authgear_server: ServerProcess,
    tmp_path: Path,
) -> None:
    ag, sub, _ = sdk_signed_in(authgear_server, tmp_path)
    for backend in (fastapi_jwt, flask_jwt):
        assert ag.fetch("GET", backend.url + "/api/me").json()["sub"] == sub


def test_trusted_proxy_peer_check() -> None:
    headers = {"x-authgear-session-valid": "true", "x-authgear-user-id": "u1"}
    auth = TrustedProxyHeaders(trusted_proxies=["10.0.0.0/8"])
    assert auth.authenticate(SimpleRequest(headers, peer="10.1.2.3")).sub == "u1"
    with pytest.raises(MissingCredentials):
        auth.authenticate(SimpleRequest(headers, peer="192.0.2.1"))
    with pytest.raises(ValueError):
        TrustedProxyHeaders(trusted_proxies=[])


def test_proxy_headers_with_odd_values_are_not_errors() -> None:
    """Header values are Latin-1: '\\xb2' is a digit to str.isdigit() but not to int()."""
    auth = TrustedProxyHeaders(trusted_proxies=["127.0.0.1"])
    for value in ("\xb2", "\xb9\xb2", "12x", "-5", ""):
        headers = {
            "x-authgear-session-valid": "true",
            "x-authgear-user-id": "u1",
            "x-authgear-session-authenticated-at": value,
        }
        user = auth.authenticate(SimpleRequest(headers, peer="127.0.0.1"))
        assert user.sub == "u1" and user.authenticated_at is None, value
