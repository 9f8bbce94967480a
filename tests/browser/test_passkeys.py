"""Passkeys in headless Chromium with a CDP virtual authenticator (resident keys, user
verification): register one in /settings/security, then sign in to an app with it and no
password; the page's script runs under the pages' CSP (script-src 'self')."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page

from agtest.mfa import claims
from agtest.server import Flow, ServerProcess, exchange, free_port, new_email, server_config

PASSWORD = "correct horse battery"


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
    app = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{app.server_address[1]}/callback"
    app.shutdown()
    app.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """WebAuthn needs a host name as RP ID (not 127.0.0.1): the origin is localhost."""
    port = free_port()
    config = server_config(port, public_origin=f"http://localhost:{port}")
    process = ServerProcess(tmp_path_factory.mktemp("passkeys"), port, config)
    process.start()
    yield process
    process.stop()


def base(server: ServerProcess) -> str:
    return f"http://localhost:{server.port}"


def virtual_authenticator(context: BrowserContext, page: Page) -> tuple[CDPSession, str]:
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, str(added["authenticatorId"])


def watch_csp(page: Page) -> list[str]:
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    return refused


def sign_in_with_password(page: Page, server: ServerProcess, email: str) -> None:
    page.goto(f"{base(server)}/login?next=/settings/security")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base(server)}/settings/security")


@pytest.mark.parametrize("conditional", [False, True], ids=["button", "conditional-ui"])
def test_register_a_passkey_then_sign_in_to_an_app_with_it_alone(
    server: ServerProcess, browser: Browser, callback: str, conditional: bool
) -> None:
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    refused = watch_csp(page)
    cdp, authenticator = virtual_authenticator(context, page)
    try:
        sign_in_with_password(page, server, email)
        page.click("text=Add a passkey")
        page.wait_for_url(re.compile(r".*/flow/create_passkey\?flow="))
        page.fill("#label", "Chromium key")
        page.click("text=Create passkey")
        page.wait_for_url(f"{base(server)}/settings/security?done=add_passkey")
        assert page.locator("#passkeys h3").all_inner_texts() == ["Chromium key"]
        creds: dict[str, Any] = cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": authenticator}
        )
        assert len(creds["credentials"]) == 1
        cred = creds["credentials"][0]
        assert cred["isResidentCredential"] is True and cred["rpId"] == "localhost"
        assert base64.b64decode(cred["userHandle"]).decode() == user_id

        # Signed out (cookies gone, the authenticator stays): an app's sign-in.
        context.clear_cookies()
        flow = Flow.new(redirect_uri=callback)
        if not conditional:
            # A browser without conditional UI: the button starts the ceremony.
            page.add_init_script(
                "PublicKeyCredential.isConditionalMediationAvailable = async () => false;"
            )
        page.goto(f"{base(server)}/oauth2/authorize?{urlencode(flow.params())}")
        if not conditional:
            page.wait_for_url(re.compile(r".*/login\?flow="))
            assert page.get_attribute("#email", "autocomplete") == "username webauthn"
            page.click("text=Sign in with a passkey")
        # With conditional UI, Chromium's virtual authenticator (presence simulated) answers the
        # page's conditional request at once, as a user picking the passkey in the autofill.
        page.wait_for_url(re.compile("^" + re.escape(callback) + r"\?"))
        query = parse_qs(urlsplit(page.url).query)
        assert query["state"] == [flow.state]
        tokens = exchange(server, query["code"][0], flow)
        assert tokens.status_code == 200, tokens.text
        id_claims = claims(tokens.json()["id_token"])
        assert id_claims["sub"] == user_id
        assert id_claims["amr"] == ["x_passkey", "x_primary_passkey"]
        after: dict[str, Any] = cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": authenticator}
        )
        assert after["credentials"][0]["signCount"] >= 1
        assert refused == []
    finally:
        context.close()


def test_cancelled_ceremony_shows_an_error_and_the_password_still_works(
    server: ServerProcess, browser: Browser, callback: str
) -> None:
    """A user who cancels (no authenticator answers: user verification fails) stays on the page
    with a message and signs in with the password instead."""
    email = new_email()
    server.create_user(email, PASSWORD)
    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    cdp, authenticator = virtual_authenticator(context, page)
    cdp.send(
        "WebAuthn.setUserVerified", {"authenticatorId": authenticator, "isUserVerified": False}
    )
    try:
        flow = Flow.new(redirect_uri=callback)
        page.goto(f"{base(server)}/oauth2/authorize?{urlencode(flow.params())}")
        page.click("text=Sign in with a passkey")
        error = page.locator("[data-passkey-error]")
        error.wait_for(state="visible")
        assert error.inner_text()
        page.fill("#email", email)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile("^" + re.escape(callback) + r"\?"))
    finally:
        context.close()
