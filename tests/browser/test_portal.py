"""The portal in headless Chromium, and the end of the seed's story: an admin signs in, finds the
user, revokes the app's session; the app's next call to its backend (the example FastAPI backend
in resolver mode) gets 401 and the SDK ends in NO_SESSION.

Screenshots of each page go to test-artifacts/portal/ (used by docs/admin.md).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from playwright.sync_api import Browser, Page, expect

from agtest.server import (
    NATIVE,
    NATIVE_REDIRECT,
    ServerProcess,
    exchange,
    free_port,
    login,
    new_email,
)
from agtest.server import Browser as HttpBrowser
from authgear import Authgear, OAuthError, SessionState, SessionStateChangeReason
from authgear.client import FileTokenStorage

PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "portal"


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def backend(
    authgear_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """examples/fastapi_backend.py in resolver mode: it asks our server about every request."""
    port = free_port()
    log = tmp_path_factory.mktemp("backend") / "backend.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "fastapi_backend.py"),
                "--mode",
                "resolver",
                "--endpoint",
                authgear_server.url,
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx2.get(url + "/api/public", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def sdk_signed_in(server: ServerProcess, token_dir: Path, email: str) -> Authgear:
    """The SDK signed in through the real login form over HTTP."""
    ag = Authgear(NATIVE, server.url, token_storage=FileTokenStorage(token_dir))
    ag.configure()
    url = ag.make_authorize_url(NATIVE_REDIRECT, login_hint=email)
    web = HttpBrowser(server.url)
    try:
        r = web.http.get(url)
        assert r.status_code == 303
        r = web.submit(r.headers["location"], email, PASSWORD)
        assert r.status_code == 303
        ag.finish_authentication(str(r.headers["location"]))
    finally:
        web.close()
    return ag


def portal_sign_in(
    page: Page, server: ServerProcess, email: str, path: str = "/portal", shot_as: str = ""
) -> None:
    page.goto(server.url + path)
    expect(page).to_have_title(re.compile("^Sign in"))
    assert "next=" in page.url
    if shot_as:
        shot(page, shot_as)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_admin_revokes_the_apps_session_and_the_app_feels_it(
    authgear_server: ServerProcess, browser: Browser, backend: str, tmp_path: Path
) -> None:
    server = authgear_server
    admin_email = new_email()
    server.create_user(admin_email, PASSWORD, "--role", "admin")
    email = new_email()
    user_id = server.create_user(email, PASSWORD)

    # The app: signed in, calling its backend.
    ag = sdk_signed_in(server, tmp_path / "app", email)
    states: list[SessionStateChangeReason] = []
    ag.on_session_state_change(lambda change: states.append(change.reason))
    r = ag.fetch("GET", backend + "/api/me")
    assert r.status_code == 200 and r.json()["sub"] == user_id
    stale = ag.token_storage.load(ag.storage_key)
    assert stale is not None

    # The operator, in a browser without JavaScript: everything is plain forms and links.
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        portal_sign_in(page, server, admin_email, shot_as="0-sign-in")
        expect(page).to_have_url(server.url + "/portal/users")
        expect(page.get_by_role("heading", level=1)).to_have_text("Users")
        shot(page, "1-users")

        page.get_by_label("Search by email or user ID").fill(email)
        page.get_by_role("button", name="Search").click()
        row = page.get_by_role("row").filter(has_text=email)
        expect(row).to_have_count(1)
        shot(page, "2-search")
        page.get_by_role("link", name=email).click()

        expect(page.get_by_role("heading", level=1)).to_have_text(email)
        sessions = page.get_by_role("table")
        expect(sessions.get_by_role("row")).to_have_count(3)  # header + browser + app
        app_row = sessions.get_by_role("row").filter(has_text="App session")
        expect(app_row).to_contain_text("Native test app")
        expect(app_row.locator("time").first).to_have_text("just now")  # relative times
        shot(page, "3-user")

        app_row.get_by_role("link", name=re.compile(r"^Revoke app session")).click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Revoke this session?")
        shot(page, "4-confirm-revoke")
        # Nothing happened yet: the confirmation is its own step.
        assert ag.fetch("GET", backend + "/api/me").status_code == 200
        page.get_by_role("button", name="Revoke session").click()

        expect(page.get_by_role("status")).to_contain_text("The session was revoked")
        expect(page.get_by_role("table").get_by_role("row")).to_have_count(2)
        shot(page, "5-revoked")

        page.get_by_role("link", name="Audit log").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Audit log")
        first = page.get_by_role("table").get_by_role("row").nth(1)
        expect(first).to_contain_text("Revoked session")
        expect(first).to_contain_text(f"Portal: {admin_email}")
        expect(first.get_by_role("link", name=email)).to_be_visible()
        expect(first).to_contain_text("App session (Native test app)")
        shot(page, "6-audit-log")
    finally:
        context.close()

    # The seed's story ends: the backend (resolver mode) refuses the app's access token at once.
    r = ag.fetch("GET", backend + "/api/me")
    assert r.status_code == 401
    # fetch_user_info: 401 invalid_grant clears the session.
    with pytest.raises(OAuthError) as info:
        ag.fetch_user_info()
    assert info.value.error == "invalid_grant"
    assert ag.session_state is SessionState.NO_SESSION
    assert ag.session_state_reason is SessionStateChangeReason.INVALID
    assert states[-1] is SessionStateChangeReason.INVALID
    assert ag.token_storage.load(ag.storage_key) is None

    # The same app in another process, whose access token has expired: its refresh gets
    # invalid_grant, refresh_access_token_if_needed() does not raise and ends in NO_SESSION.
    other_store = FileTokenStorage(tmp_path / "other")
    other = Authgear(NATIVE, server.url, token_storage=other_store)
    other_store.save(
        other.storage_key, dataclasses.replace(stale, refresh_after=0.0, expires_at=0.0)
    )
    other.configure()
    assert other.session_state is SessionState.AUTHENTICATED
    assert other.refresh_access_token_if_needed() is None
    assert other.session_state is SessionState.NO_SESSION
    assert other.session_state_reason is SessionStateChangeReason.INVALID
    assert other.fetch("GET", backend + "/api/me").status_code == 401


def test_portal_pages_with_javascript_focus_and_forbidden(
    authgear_server: ServerProcess, page: Page
) -> None:
    server = authgear_server
    plain = new_email()
    server.create_user(plain, PASSWORD)
    portal_sign_in(page, server, plain)
    expect(page.get_by_role("heading", level=1)).to_have_text("You cannot use the portal")
    expect(page.get_by_role("alert")).to_contain_text("does not have the admin role")
    shot(page, "7-forbidden")
    page.get_by_role("button", name="Sign out").click()

    admin_email = new_email()
    server.create_user(admin_email, PASSWORD, "--role", "admin")
    target = new_email()
    target_id = server.create_user(target, PASSWORD)
    portal_sign_in(page, server, admin_email, f"/portal/users/{target_id}")
    expect(page).to_have_url(server.url + f"/portal/users/{target_id}")
    page.get_by_role("link", name="Disable user").click()
    # The confirmation button has the focus: Enter confirms, the Cancel link is next.
    expect(page.get_by_role("button", name="Disable user")).to_be_focused()
    shot(page, "8-confirm-disable")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Cancel")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("disabled")
    expect(page.get_by_text("Disabled", exact=True).first).to_be_visible()
    page.get_by_role("link", name="Enable user").click()
    page.get_by_role("button", name="Enable user").click()
    expect(page.get_by_role("status")).to_contain_text("enabled again")


def test_user_signs_out_another_session_in_settings(
    authgear_server: ServerProcess, page: Page
) -> None:
    server = authgear_server
    email = new_email()
    server.create_user(email, PASSWORD)
    cb, flow, web = login(server, email, PASSWORD)
    web.close()
    tokens = exchange(server, cb["code"], flow).json()

    portal_sign_in(page, server, email, "/settings/sessions")
    expect(page).to_have_url(server.url + "/settings/sessions")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your sessions")
    items = page.get_by_role("listitem").filter(has=page.get_by_role("heading", level=2))
    expect(items).to_have_count(3)  # this browser, the other browser, the app
    expect(items.filter(has_text="This browser")).to_have_count(1)
    shot(page, "9-settings-sessions")

    app = items.filter(has_text="App session")
    app.get_by_role("button", name=re.compile("^Sign out of")).click()
    expect(page.get_by_role("status")).to_contain_text("signed out")
    expect(items).to_have_count(2)
    r = httpx2.post(
        server.url + "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": NATIVE,
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert r.json()["error"] == "invalid_grant"
