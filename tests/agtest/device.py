"""The device authorization grant (RFC 8628) over HTTP: ask for a code as a device does, poll,
and approve or deny on /device as a person without JavaScript does (shared by the server,
SDK, CLI and interop tests)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx2

from agtest.server import DEVICE, DEVICE_GRANT, Browser, ServerProcess

SCOPE = "openid offline_access https://authgear.com/scopes/full-access"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
USER_CODE_RE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


def authorize(
    server: ServerProcess, client_id: str = DEVICE, scope: str = SCOPE, **extra: str
) -> httpx2.Response:
    return httpx2.post(
        server.url + "/oauth2/device_authorization",
        data={"client_id": client_id, "scope": scope, **extra},
        timeout=30,
    )


def new_code(server: ServerProcess, client_id: str = DEVICE, scope: str = SCOPE) -> dict[str, Any]:
    r = authorize(server, client_id, scope)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def poll(
    server: ServerProcess, device_code: str, client_id: str = DEVICE, **extra: str
) -> httpx2.Response:
    return httpx2.post(
        server.url + "/oauth2/token",
        data={
            "grant_type": DEVICE_GRANT,
            "device_code": device_code,
            "client_id": client_id,
            **extra,
        },
        timeout=30,
    )


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, f"no csrf token on the page: {html[:300]}"
    return m.group(1)


def location(r: httpx2.Response) -> str:
    assert r.status_code in (302, 303), (r.status_code, r.text[:500])
    return r.headers["location"]


def enter_code(browser: Browser, user_code: str, page: str = "/device") -> httpx2.Response:
    """The code typed on /device (GET for the form's CSRF token, then POST)."""
    shown = browser.http.get(page)
    assert shown.status_code == 200, shown.text[:300]
    return browser.http.post(
        "/device", data={"csrf_token": csrf_of(shown.text), "user_code": user_code}
    )


def decide(browser: Browser, step_url: str, decision: str = "approve") -> httpx2.Response:
    """The approval page: GET it (it must show the request), then press a button."""
    page = browser.http.get(step_url)
    assert page.status_code == 200, page.text[:500]
    assert "phishing-hint" in page.text
    return browser.http.post(
        step_url, data={"csrf_token": csrf_of(page.text), "decision": decision}
    )


def approve_as(
    server: ServerProcess,
    user_code: str,
    email: str,
    password: str,
    decision: str = "approve",
    browser: Browser | None = None,
) -> httpx2.Response:
    """A person who is not signed in: code, login page, approval page; the final page."""
    browser = browser or Browser(server.url)
    r = enter_code(browser, user_code)
    target = location(r)
    if urlsplit(target).path == "/login":
        r = browser.submit(target, email, password)
        target = location(r)
    assert urlsplit(target).path == "/flow/approve_device", target
    return decide(browser, target, decision)
