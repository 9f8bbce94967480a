"""Walking the sign-in steps over HTTP like a person without JavaScript: second factors
(TOTP codes computed with pyotp), recovery codes and the security settings."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pyotp

from agtest.server import CSRF_RE, Browser, Flow, ServerProcess, callback_params, exchange
from agtest.softauthn import SoftAuthenticator

SECRET_RE = re.compile(r'<code class="secret" id="totp-secret">([A-Z2-7 ]+)</code>')
CODES_RE = re.compile(r"<li><code>([0-9A-Z]{5}-[0-9A-Z]{5})</code></li>")
FLOW_RE = re.compile(r"[?&]flow=([A-Za-z0-9_-]+)")


def settle_totp_step() -> None:
    """Wait out the last seconds of a 30-second step, so a code computed now is still of the
    server's current step when it arrives (no timing assertion: only avoids the edge)."""
    while time.time() % 30 > 27:
        time.sleep(0.2)


def code(secret: str, steps_from_now: int = 0) -> str:
    """The TOTP code ``steps_from_now`` steps away (the server accepts -1, 0 and +1)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_from_now)


def csrf_of(page: httpx2.Response) -> str:
    m = CSRF_RE.search(page.text)
    assert m, f"no csrf token on {page.url}: {page.text[:300]}"
    return m.group(1)


def post_page(browser: Browser, url: str, data: dict[str, str]) -> httpx2.Response:
    """GET the page (for its CSRF token), then POST the form to the same URL."""
    page = browser.http.get(url)
    assert page.status_code == 200, (url, page.status_code, page.text[:500])
    return browser.http.post(url, data={"csrf_token": csrf_of(page), **data})


def location(response: httpx2.Response) -> str:
    assert response.status_code == 303, (response.status_code, response.text[:500])
    return response.headers["location"]


def step_of(response: httpx2.Response) -> str:
    """The step page a response redirects to (``/flow/<step>?flow=...`` → ``<step>``)."""
    path = urlsplit(location(response)).path
    assert path.startswith("/flow/"), path
    return path.removeprefix("/flow/")


def answer_totp(browser: Browser, response: httpx2.Response, secret: str, **extra: str) -> Any:
    assert step_of(response) == "totp", location(response)
    settle_totp_step()
    return post_page(browser, location(response), {"code": code(secret), **extra})


def enrol_totp(browser: Browser, *, steps_from_now: int = -1) -> tuple[str, list[str]]:
    """In a signed-in browser (a fresh sign-in): set up an authenticator app from
    /settings/security; returns its secret and the recovery codes shown once."""
    page = browser.http.get("/settings/security")
    assert page.status_code == 200, page.text[:500]
    r = browser.http.post("/settings/security/totp/add", data={"csrf_token": csrf_of(page)})
    assert step_of(r) == "enroll_totp", location(r)
    enrol_url = location(r)
    enrol_page = browser.http.get(enrol_url)
    m = SECRET_RE.search(enrol_page.text)
    assert m, enrol_page.text[:1000]
    secret = m.group(1).replace(" ", "")
    settle_totp_step()
    done = browser.http.post(
        enrol_url,
        data={"csrf_token": csrf_of(enrol_page), "code": code(secret, steps_from_now)},
    )
    assert step_of(done) == "recovery_codes", location(done)
    codes_page = browser.http.get(location(done))
    codes = CODES_RE.findall(codes_page.text)
    finished = browser.http.post(location(done), data={"csrf_token": csrf_of(codes_page)})
    assert location(finished) == "/settings/security?done=add_totp"
    return secret, codes


def signed_in_browser(server: ServerProcess, email: str, password: str) -> Browser:
    """A browser signed in at /login (no app), landing on /settings/security."""
    browser = Browser(server.url)
    r = browser.submit("/login?next=/settings/security", email, password)
    assert location(r) == "/settings/security", location(r)
    return browser


def start_login(
    server: ServerProcess, email: str, password: str, flow: Flow | None = None, **extra: str
) -> tuple[httpx2.Response, Flow, Browser]:
    """authorize → /login form; returns the response to the password (a step, or the app)."""
    flow = flow or Flow.new()
    browser = Browser(server.url)
    r = browser.authorize(**flow.params(**extra))
    return browser.submit(location(r), email, password), flow, browser


def finish_login(server: ServerProcess, r: httpx2.Response, flow: Flow) -> dict[str, Any]:
    """The callback's code exchanged: the token response."""
    cb = callback_params(r)
    assert cb["state"] == flow.state
    tokens = exchange(server, cb["code"], flow)
    assert tokens.status_code == 200, tokens.text
    body: dict[str, Any] = tokens.json()
    return body


def claims(token: str) -> dict[str, Any]:
    """A JWT's payload (the signature is checked elsewhere; these tests read claims)."""
    payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return payload


def flow_id(response: httpx2.Response) -> str:
    m = FLOW_RE.search(location(response))
    assert m, location(response)
    return m.group(1)


def callback_query(response: httpx2.Response) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location(response)).query).items()}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def authenticator_rows(server: ServerProcess, user_id: str) -> list[tuple[Any, ...]]:
    return server.query(
        "SELECT kind, counter, last_used_at FROM authenticators WHERE user_id = ? ORDER BY kind",
        user_id,
    )


def stored_flow(server: ServerProcess, fid: str) -> dict[str, Any]:
    rows = server.query("SELECT CAST(data AS TEXT) FROM auth_flows WHERE id = ?", fid)
    assert len(rows) == 1
    data: dict[str, Any] = json.loads(rows[0][0])
    return data


def options(browser: Browser, url: str, token: str, **extra: str) -> dict[str, Any]:
    r = browser.http.post(url, data={"csrf_token": token, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def register_passkey(browser: Browser, soft: SoftAuthenticator) -> httpx2.Response:
    """Add a passkey from /settings/security (fresh session) with ``soft``."""
    page = browser.http.get("/settings/security")
    started = browser.http.post(
        "/settings/security/passkeys/add", data={"csrf_token": csrf_of(page)}
    )
    assert step_of(started) == "create_passkey"
    step = browser.http.get(location(started))
    assert 'data-passkey="create"' in step.text
    opts = options(browser, location(started).replace("?", "/options?"), csrf_of(step))
    created = soft.create(opts["publicKey"])
    return browser.http.post(
        opts["action"],
        data={
            "csrf_token": opts["csrf_token"],
            "credential": json.dumps(created),
            "label": "Test key",
        },
    )
