"""The form_post code theft of issue 9, in headless Chromium.

``redirect_uri=http://evil.example:<port>\\@127.0.0.1:9999/callback`` with
``response_mode=form_post`` and a live browser session (silent SSO): the old check read host
127.0.0.1 (urllib), Chromium reads host evil.example (WHATWG: ``\\`` is ``/``) and would post the
code there. Chromium resolves evil.example to 127.0.0.1, where the attacker's listener waits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode

import pytest
from playwright.sync_api import Browser, Page

from agtest.listener import Listener
from agtest.server import NATIVE, Flow, ServerProcess, new_email

# Every lookup of evil.example goes to the loopback interface (the port stays in the URL).
CHROMIUM_EXTRA_ARGS = ["--host-resolver-rules=MAP evil.example 127.0.0.1"]
PASSWORD = "correct horse battery"


@pytest.fixture
def attacker() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


def _authorize(server: ServerProcess, flow: Flow, **extra: str) -> str:
    return f"{server.url}/oauth2/authorize?{urlencode(flow.params(**extra))}"


def _requests(listener: Listener) -> list[tuple[str, str]]:
    """What reached the listener, but the browser's own favicon requests."""
    return [(s.method, s.path) for s in listener.seen if s.path != "/favicon.ico"]


def _sign_in(page: Page, server: ServerProcess, app: Listener) -> None:
    """Sign up through the pages: the browser now has a live session."""
    flow = Flow.new(NATIVE, f"http://127.0.0.1:{app.port}/callback")
    page.goto(_authorize(server, flow, x_page="signup"))
    page.get_by_label("Email").fill(new_email())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(rf"^http://127\.0\.0\.1:{app.port}/callback\?"))


def test_form_post_code_theft_through_backslash_redirect_uri_never_reaches_the_attacker(
    authgear_server: ServerProcess, browser: Browser, attacker: Listener
) -> None:
    server = authgear_server
    context = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    app = Listener()
    try:
        _sign_in(page, server, app)

        # Controls: the resolver rule sends evil.example to the attacker's listener, and a
        # form_post response to a registered URI is posted by this browser without a click.
        page.goto(f"http://evil.example:{attacker.port}/probe")
        assert _requests(attacker) == [("GET", "/probe")]
        legit = Flow.new(NATIVE, f"http://127.0.0.1:{app.port}/callback")
        page.goto(_authorize(server, legit, response_mode="form_post"))
        page.wait_for_function("document.title === 'got a post'")
        posted = [s for s in app.seen if s.method == "POST"]
        assert len(posted) == 1 and "code" in parse_qs(posted[0].body.decode())

        # The attack: silent SSO, form_post, a redirect URI that two parsers read differently.
        hostile = f"http://evil.example:{attacker.port}\\@127.0.0.1:9999/callback"
        flow = Flow.new(NATIVE, hostile)
        response = page.goto(_authorize(server, flow, response_mode="form_post"))
        assert response is not None and response.status == 400
        assert page.url.startswith(server.url + "/oauth2/authorize")
        assert page.locator("form").count() == 0
        assert "redirect URI" in page.content()

        # Anything the attack page sent would have arrived before this later request.
        page.goto(f"http://evil.example:{attacker.port}/after")
        assert _requests(attacker) == [("GET", "/probe"), ("GET", "/after")]
    finally:
        context.close()
        app.close()
