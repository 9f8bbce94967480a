"""Account recovery in headless Chromium, reading codes from the mail the server really sent:
sign-up with required verification (a real SMTP server), forgot password from the login page
and change password in the settings (the outbox), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from playwright.sync_api import Browser, Page

from agtest.mail import SMTPSink, code_of, wait_outbox
from agtest.server import Flow, ServerProcess, exchange, free_port, new_email

PASSWORD = "correct horse battery"
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "pages"


class _App(BaseHTTPRequestHandler):
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
    query = parse_qs(urlsplit(page.url).query)
    assert query["state"] == [flow.state]
    return query["code"][0]


def test_signup_with_required_verification_reads_the_code_from_a_real_smtp_server(
    fresh_server: ServerProcess, browser: Browser, callback: str
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    sink = SMTPSink(free_port()).start()
    try:
        server = fresh_server
        server.config["verification"] = "required"
        server.config["smtp_url"] = f"smtp://127.0.0.1:{sink.port}"
        server.start()
        email = new_email()
        context = browser.new_context()
        page = context.new_page()
        flow = Flow.new(redirect_uri=callback)
        page.goto(_authorize_url(server, flow, x_page="signup"))
        # The rules are shown before anything is submitted.
        assert page.get_by_text("At least 8 characters.").is_visible()
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create account").click()
        page.wait_for_url(re.compile(r".*/flow/verify_email\?flow="))
        assert page.get_by_role("heading", name="Verify your email").is_visible()
        page.screenshot(path=str(SHOTS / "verify-email.png"))
        code = code_of(sink.wait(email, "verify_email"))
        page.get_by_label("Code").fill("000000" if code != "000000" else "111111")
        page.get_by_role("button", name="Verify", exact=True).click()
        assert "not valid" in page.get_by_role("alert").inner_text()
        page.get_by_label("Code").fill(code)
        page.get_by_role("button", name="Verify", exact=True).click()
        tokens = exchange(server, _code(page, flow), flow).json()
        claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
        assert claims["https://authgear.com/claims/user/is_verified"] is True
        context.close()
    finally:
        sink.stop()


def test_forgot_password_from_the_login_page_then_sign_in_in_the_same_flow(
    authgear_server: ServerProcess, browser: Browser, callback: str
) -> None:
    server = authgear_server
    email = new_email()
    server.create_user(email, PASSWORD)
    context = browser.new_context()
    page = context.new_page()
    flow = Flow.new(redirect_uri=callback)
    page.goto(_authorize_url(server, flow))
    page.get_by_role("link", name="Forgot password?").click()
    assert page.get_by_role("heading", name="Reset your password").is_visible()
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Send me a code").click()
    assert page.get_by_role("heading", name="Choose a new password").is_visible()
    page.screenshot(path=str(SHOTS / "reset-password.png"))
    code = code_of(wait_outbox(server.data_dir, email, "reset_password"))
    page.get_by_label("Code from the email").fill(code)
    page.get_by_label("New password", exact=True).fill("chosen in chromium 7")
    page.get_by_label("Repeat the new password").fill("chosen in chromium 7")
    page.get_by_role("button", name="Set new password").click()
    assert page.get_by_role("heading", name="Password changed").is_visible()
    page.get_by_role("link", name="Sign in with your new password").click()
    # Back on the sign-in page of the same OAuth flow.
    assert "flow=" in page.url
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("chosen in chromium 7")
    page.get_by_role("button", name="Sign in").click()
    assert exchange(server, _code(page, flow), flow).status_code == 200
    context.close()


def test_change_password_in_settings(authgear_server: ServerProcess, browser: Browser) -> None:
    server = authgear_server
    email = new_email()
    server.create_user(email, PASSWORD)
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/login?next=/settings")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/settings")
    page.get_by_role("link", name="Password and email").first.click()
    page.wait_for_url(f"{server.url}/settings/account")
    page.locator("#current_password").fill("not my password")
    page.locator("#new_password").fill("changed in chromium 9")
    page.locator("#new_password_confirm").fill("changed in chromium 9")
    page.get_by_role("button", name="Change password").click()
    assert "current password is not correct" in page.get_by_role("alert").inner_text()
    page.locator("#current_password").fill(PASSWORD)
    page.locator("#new_password").fill("changed in chromium 9")
    page.locator("#new_password_confirm").fill("changed in chromium 9")
    page.get_by_role("button", name="Change password").click()
    assert "Your password was changed" in page.get_by_role("status").first.inner_text()
    page.screenshot(path=str(SHOTS / "settings-account.png"))
    wait_outbox(server.data_dir, email, "password_changed")
    # Signed out, the new password works and the old one does not.
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{server.url}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Incorrect email or password."
    page.get_by_label("Password").fill("changed in chromium 9")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/")
    context.close()
