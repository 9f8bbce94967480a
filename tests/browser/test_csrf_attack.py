"""Cookie tossing against the pages' CSRF protection (issue 18 point 3), in headless Chromium.

An attacker's page on another port of the same host sets ``authgear_csrf=<known>`` (cookies
ignore ports, so the browser sends it to our server too) and auto-submits a form to /logout
with ``csrf_token=<known>``. The post is same-site, so the victim's SameSite=Lax session cookie
goes with it; a plain double-submit check would pass. The victim must stay signed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from agtest.listener import Listener
from agtest.server import ServerProcess, new_email

PASSWORD = "correct horse battery"
KNOWN = "attacker-known-csrf-nonce-0123456789"


@pytest.fixture
def attacker(authgear_server: ServerProcess) -> Iterator[Listener]:
    form = (
        f'<!doctype html><title>cute cats</title><form method="post" '
        f'action="{authgear_server.url}/logout"><input type="hidden" name="csrf_token" '
        f'value="{KNOWN}"></form><script>document.forms[0].submit()</script>'
    ).encode()
    listener = Listener(
        pages={"/cats": (200, {"Set-Cookie": f"authgear_csrf={KNOWN}; Path=/"}, form)}
    )
    yield listener
    listener.close()


def _sign_up(page: Page, server: ServerProcess) -> None:
    page.goto(server.url + "/signup")
    page.get_by_label("Email").fill(new_email())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(server.url + "/")
    assert page.get_by_role("heading", name="You are signed in").is_visible()


def test_tossed_csrf_cookie_from_another_port_cannot_sign_the_victim_out(
    authgear_server: ServerProcess, browser: Browser, attacker: Listener
) -> None:
    server = authgear_server
    context = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        _sign_up(page, server)
        page.goto(f"http://127.0.0.1:{attacker.port}/cats")
        # The forged post reached our server (the browser shows our answer) ...
        page.wait_for_url(re.compile("^" + re.escape(server.url) + "/logout$"))
        assert "Your session expired" in page.content()
        # ... carrying the tossed cookie, which replaced ours:
        tossed = [c for c in context.cookies(server.url) if c["name"] == "authgear_csrf"]
        assert [c["value"] for c in tossed] == [KNOWN]
        # ... and the victim is still signed in.
        page.goto(server.url + "/")
        assert page.get_by_role("heading", name="You are signed in").is_visible()
    finally:
        context.close()
