"""The device authorization grant with a real browser: our SDK's authenticate_device() polls
our server from a worker thread (the device) while headless Chromium, the user's phone or
laptop, opens the verification_uri_complete, confirms the code, signs in and approves (and in
another run denies). No JavaScript is needed on these pages."""

from __future__ import annotations

import queue
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from agtest.server import DEVICE, ServerProcess, new_email
from authgear import AccessDeniedError, Authgear, DeviceAuthorization
from authgear.client import FileTokenStorage

PASSWORD = "correct horse battery"


def db(server: ServerProcess, sql: str, *params: object) -> list[tuple[object, ...]]:
    """server.query off this thread (Playwright's sync API keeps an event loop running here)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(server.query, sql, *params).result()


def start_device(
    server: ServerProcess, tmp_path: Path
) -> tuple[Authgear, ThreadPoolExecutor, object, DeviceAuthorization]:
    """The SDK on the 'device': authenticate_device() in a worker thread; returns once the
    callback got the code."""
    shown: queue.Queue[DeviceAuthorization] = queue.Queue()
    ag = Authgear(DEVICE, server.url, token_storage=FileTokenStorage(tmp_path))
    ag.configure()
    pool = ThreadPoolExecutor(1)
    future = pool.submit(ag.authenticate_device, shown.put)
    return ag, pool, future, shown.get(timeout=60)


def sign_in_and_decide(page: Page, code: DeviceAuthorization, email: str, button: str) -> None:
    assert code.verification_uri_complete is not None
    page.goto(code.verification_uri_complete)
    # A GET only fills in the form: the user confirms the code first.
    assert page.input_value("#user_code") == code.user_code
    assert "Only continue if you started" in page.content()
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/login\?flow="))
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/flow/approve_device\?flow="))
    text = page.inner_text("main")
    assert "Device test app" in text and email in text and "Only approve" in text
    page.click(f"button[value={button}]")
    page.wait_for_selector("#device-result")


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_chromium_approves_or_denies_on_device_while_the_sdk_polls(
    authgear_server: ServerProcess, browser: Browser, tmp_path: Path, decision: str
) -> None:
    server = authgear_server
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    ag, pool, future, code = start_device(server, tmp_path)
    context = browser.new_context()
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        assert re.fullmatch(r"[B-Z]{4}-[B-Z]{4}", code.user_code)
        assert code.verification_uri == server.url + "/device"
        sign_in_and_decide(page, code, email, decision)
        if decision == "approve":
            assert "Device signed in" in page.inner_text("main")
            result = future.result(timeout=60)  # type: ignore[attr-defined]
            assert result.sub == user_id
            assert ag.fetch("GET", server.url + "/oauth2/userinfo").json()["sub"] == user_id
            grants = db(
                server,
                "SELECT COUNT(*) FROM offline_grants WHERE user_id = ? AND client_id = ?",
                user_id,
                DEVICE,
            )
            assert grants == [(1,)]
            # the device's session is in the user's list, in this browser
            page.goto(server.url + "/settings/sessions")
            assert "Device test app" in page.inner_text("main")
        else:
            assert "Sign-in denied" in page.inner_text("main")
            with pytest.raises(AccessDeniedError):
                future.result(timeout=60)  # type: ignore[attr-defined]
            assert list(tmp_path.iterdir()) == [] or all(
                p.name.endswith(".lock") for p in tmp_path.iterdir()
            )
    finally:
        ag.cancel_authentication()
        pool.shutdown(wait=True)
        ag.close()
        context.close()
