"""Our Python SDK's authenticate() and reauthenticate() against our server, with headless
Chromium as the user's browser (the SDK's open_browser gets the URL), for a user with an
authenticator app: the reauthentication asks for the password and the code again, the SDK
gets a new auth_time in a new ID token for the same user, its refresh token stays, and the
server's browser session and app session are re-authenticated in place."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playwright.sync_api import Browser, Page

from agtest.mfa import claims, code, enrol_totp, settle_totp_step, signed_in_browser
from agtest.server import NATIVE, ServerProcess, new_email
from authgear import Authgear
from authgear.client import FileTokenStorage

PASSWORD = "correct horse battery"
REDIRECT = "http://127.0.0.1/callback"
LOOPBACK = re.compile(r"^http://127\.0\.0\.1:\d+/callback\?")


def db(server: ServerProcess, sql: str, *params: object) -> list[tuple[object, ...]]:
    """server.query off this thread (Playwright's sync API keeps an event loop running here,
    and the PostgreSQL query runs one of its own)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(server.query, sql, *params).result()


def answer_code(page: Page, secret: str, steps_from_now: int) -> None:
    """The last page: its answer redirects to the SDK's loopback listener, which answers only
    once the SDK has finished, after open_browser returns: do not wait for it here."""
    page.wait_for_url(re.compile(r".*/flow/totp\?flow="))
    page.fill("#code", code(secret, steps_from_now))
    page.click("button[type=submit]", no_wait_after=True)


def test_sdk_reauthenticate_in_chromium_with_password_and_totp(
    authgear_server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    server = authgear_server
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    settings = signed_in_browser(server, email, PASSWORD)
    secret, _ = enrol_totp(settings, steps_from_now=-1)
    settings.close()
    settle_totp_step()

    context = browser.new_context()
    context.set_default_timeout(20_000)
    page = context.new_page()
    seen: list[str] = []

    def sign_in(url: str) -> None:
        seen.append(url)
        page.goto(url)
        page.fill("#email", email)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        answer_code(page, secret, 0)

    def confirm(url: str) -> None:
        seen.append(url)
        page.goto(url)
        page.wait_for_url(re.compile(r".*/flow/reauth\?flow="))
        assert email in page.content()
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        answer_code(page, secret, 1)

    ag = Authgear(NATIVE, server.url, token_storage=FileTokenStorage(tmp_path))
    try:
        ag.configure()
        first = ag.authenticate(open_browser=sign_in, redirect_uri=REDIRECT, timeout=60)
        assert first.sub == user_id and ag.can_reauthenticate
        page.wait_for_url(LOOPBACK)
        assert "You are signed in" in page.content()
        before = ag.token_storage.load(ag.storage_key)
        assert before is not None and before.id_token is not None
        sid = claims(before.id_token)["sid"]
        # An hour passes (moved in the database, not slept).
        old = int(time.time()) - 3600
        db(server, "UPDATE idp_sessions SET authenticated_at = ? WHERE id = ?", old, sid)
        db(server, "UPDATE offline_grants SET authenticated_at = ? WHERE user_id = ?", old, user_id)

        result = ag.reauthenticate(open_browser=confirm, redirect_uri=REDIRECT, timeout=60)
        page.wait_for_url(LOOPBACK)
        assert "You are signed in" in page.content()
        assert "max_age=0" in seen[-1] and "id_token_hint=" in seen[-1]
        assert result.sub == user_id
        assert result.auth_time is not None and result.auth_time.timestamp() > old
        assert ag.auth_time == result.auth_time
        auth_time = int(result.auth_time.timestamp())
        after = ag.token_storage.load(ag.storage_key)
        assert after is not None and after.id_token is not None
        assert after.refresh_token == before.refresh_token
        new = claims(after.id_token)
        assert new["sid"] == sid and new["nonce"]
        assert new["amr"] == ["mfa", "otp", "pwd", "x_primary_password", "x_secondary_totp"]
        # The browser session and the SDK's app session are re-authenticated in place.
        assert db(server, "SELECT authenticated_at FROM idp_sessions WHERE id = ?", sid) == [
            (auth_time,)
        ]
        grant = db(server, "SELECT authenticated_at FROM offline_grants WHERE user_id = ?", user_id)
        assert grant == [(auth_time,)]
        assert ag.refresh_access_token() is not None
        assert ag.auth_time == result.auth_time  # a refresh keeps the new time
    finally:
        ag.close()
        context.close()
