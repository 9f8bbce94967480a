"""The httpx2 / httpx / requests adapters, against a scripted app server."""

from __future__ import annotations

import time

import httpx
import httpx2
import requests
from client_support import Reply, ScriptedServer, key_for

from authgear import AsyncAuthgear, Authgear, AuthgearAuth
from authgear.client import MemoryTokenStorage, StoredSession, httpx_auth
from authgear.client.requests_auth import AuthgearRequestsAuth


def _storage(url: str) -> MemoryTokenStorage:
    now = time.time()
    s = MemoryTokenStorage()
    s.save(
        key_for(url),
        StoredSession("rt-1", "at-1", expires_at=now + 3600, refresh_after=now + 3000),
    )
    return s


def _script(server: ScriptedServer) -> None:
    server.routes["/oauth2/token"] = lambda s: Reply(
        200, {"access_token": "at-2", "token_type": "Bearer", "expires_in": 600}
    )
    server.routes["/api"] = lambda s: (
        Reply(200, {"ok": True, "body": s.body.decode()})
        if s.headers.get("authorization") == "Bearer at-2"
        else Reply(401, {}, {"www-authenticate": 'Bearer error="invalid_token"'})
    )


def test_httpx2_auth_sync(scripted: ScriptedServer) -> None:
    _script(scripted)
    ag = Authgear("app", scripted.url, token_storage=_storage(scripted.url))
    ag.configure()
    with httpx2.Client(auth=AuthgearAuth(ag)) as c:
        r = c.post(scripted.url + "/api", content=b"x")
    assert r.json() == {"ok": True, "body": "x"}
    assert scripted.count("/oauth2/token") == 1
    assert scripted.count("/api") == 2
    ag.close()


async def test_httpx2_auth_async(scripted: ScriptedServer) -> None:
    _script(scripted)
    ag = AsyncAuthgear("app", scripted.url, token_storage=_storage(scripted.url))
    await ag.configure()
    async with httpx2.AsyncClient(auth=AuthgearAuth(ag)) as c:
        r = await c.post(scripted.url + "/api", json={"a": 1})
    assert r.json()["ok"] is True
    assert scripted.count("/oauth2/token") == 1
    await ag.aclose()


async def test_sync_authgear_in_async_client(scripted: ScriptedServer) -> None:
    _script(scripted)
    ag = Authgear("app", scripted.url, token_storage=_storage(scripted.url))
    ag.configure()
    async with httpx2.AsyncClient(auth=AuthgearAuth(ag)) as c:
        r = await c.get(scripted.url + "/api")
    assert r.status_code == 200
    ag.close()


def test_plain_httpx_client_and_auth(scripted: ScriptedServer) -> None:
    _script(scripted)
    with httpx.Client() as hc:
        ag = Authgear("app", scripted.url, token_storage=_storage(scripted.url), http_client=hc)
        ag.configure()
        r = ag.fetch("GET", scripted.url + "/api")
        assert isinstance(r, httpx.Response) and r.status_code == 200
    ag2 = Authgear("app", scripted.url, token_storage=_storage(scripted.url))
    ag2.configure()
    with httpx.Client(auth=httpx_auth(ag2)) as c:
        assert c.get(scripted.url + "/api").status_code == 200
    ag2.close()


def test_requests_auth(scripted: ScriptedServer) -> None:
    _script(scripted)
    ag = Authgear("app", scripted.url, token_storage=_storage(scripted.url))
    ag.configure()
    with requests.Session() as s:
        r = s.post(scripted.url + "/api", data=b"payload", auth=AuthgearRequestsAuth(ag))
    assert r.status_code == 200 and r.json()["body"] == "payload"
    assert len(r.history) == 1 and r.history[0].status_code == 401
    assert scripted.count("/oauth2/token") == 1
    ag.close()


def _stale_storage(url: str) -> MemoryTokenStorage:
    s = MemoryTokenStorage()
    s.save(key_for(url), StoredSession("rt-1", "at-1", expires_at=0, refresh_after=0))
    return s


def test_sdk_requests_skip_the_clients_own_auth(scripted: ScriptedServer) -> None:
    """One httpx2.Client for the SDK and, with AuthgearAuth, for the app: the SDK's own token
    request must not run that auth (it re-entered the refresh and deadlocked)."""
    import threading

    _script(scripted)
    http = httpx2.Client()
    ag = Authgear("app", scripted.url, token_storage=_stale_storage(scripted.url), http_client=http)
    http.auth = AuthgearAuth(ag)
    ag.configure()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(ag.fetch("GET", scripted.url + "/api")))
    t.daemon = True
    t.start()
    t.join(10)
    assert not t.is_alive(), "deadlocked"
    assert got[0].status_code == 200  # type: ignore[attr-defined]
    assert "authorization" not in scripted.seen[1].headers  # the token request
    http.close()


async def test_async_sdk_requests_skip_the_clients_own_auth(scripted: ScriptedServer) -> None:
    import asyncio

    _script(scripted)
    async with httpx2.AsyncClient() as http:
        ag = AsyncAuthgear(
            "app", scripted.url, token_storage=_stale_storage(scripted.url), http_client=http
        )
        http.auth = AuthgearAuth(ag)
        await ag.configure()
        r = await asyncio.wait_for(ag.fetch("GET", scripted.url + "/api"), 10)
        assert r.status_code == 200
