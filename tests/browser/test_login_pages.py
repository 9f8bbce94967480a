"""Sign-up and login through the real pages in headless Chromium."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from playwright.sync_api import Browser, Page

from agtest.server import Flow, ServerProcess, exchange, new_email

PASSWORD = "correct horse battery"
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "pages"


class _App(BaseHTTPRequestHandler):
    """The native app's loopback redirect target (RFC 8252), a real listener."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>Back in the app</title><h1>Back in the app</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def callback() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/callback"
    server.shutdown()
    server.server_close()


def _authorize_url(server: ServerProcess, flow: Flow, **extra: str) -> str:
    return f"{server.url}/oauth2/authorize?{urlencode(flow.params(**extra))}"


def _code(page: Page, flow: Flow) -> str:
    page.wait_for_url(re.compile("^" + re.escape(flow.redirect_uri) + r"\?"))
    assert page.title() == "Back in the app"
    query = parse_qs(urlsplit(page.url).query)
    assert query["state"] == [flow.state]
    return query["code"][0]


def test_signup_then_login_in_chromium(
    authgear_server: ServerProcess, browser: Browser, callback: str
) -> None:
    server = authgear_server
    SHOTS.mkdir(parents=True, exist_ok=True)
    email = new_email()

    # Sign up: x_page=signup opens the sign-up page.
    context = browser.new_context()
    page = context.new_page()
    flow = Flow.new(redirect_uri=callback)
    page.goto(_authorize_url(server, flow, x_page="signup"))
    assert page.title().startswith("Create account")
    page.screenshot(path=str(SHOTS / "signup.png"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create account").click()
    assert "at least 8" in page.get_by_role("alert").inner_text()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    code = _code(page, flow)
    tokens = exchange(server, code, flow).json()
    assert "refresh_token" in tokens
    # The IdP session cookie is HttpOnly and SameSite=Lax.
    cookie = next(c for c in context.cookies(server.url) if c["name"] == "session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    # A second authorize in the same browser skips the form.
    flow2 = Flow.new(redirect_uri=callback)
    page.goto(_authorize_url(server, flow2))
    assert _code(page, flow2)
    context.close()

    # Log in from a fresh browser profile: wrong password first, then the right one.
    context = browser.new_context()
    page = context.new_page()
    flow3 = Flow.new(redirect_uri=callback)
    page.goto(_authorize_url(server, flow3))
    assert page.title().startswith("Sign in")
    page.screenshot(path=str(SHOTS / "login.png"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    assert alert.inner_text() == "Incorrect email or password."
    assert page.get_by_label("Email").input_value() == email
    page.screenshot(path=str(SHOTS / "login-error.png"))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    code3 = _code(page, flow3)
    tokens3 = exchange(server, code3, flow3).json()
    info = httpx2.get(
        server.url + "/oauth2/userinfo",
        headers={"Authorization": f"Bearer {tokens3['access_token']}"},
    ).json()
    assert info["email"] == email
    context.close()


def test_pages_work_without_javascript(
    authgear_server: ServerProcess, browser: Browser, callback: str
) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    flow = Flow.new(redirect_uri=callback)
    page.goto(_authorize_url(authgear_server, flow, x_page="signup"))
    page.get_by_label("Email").fill(new_email())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    assert _code(page, flow)
    context.close()
