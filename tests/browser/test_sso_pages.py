"""Sign in with an upstream identity provider end to end (issue 15.4): our Python SDK's
authenticate() in headless Chromium, through "Continue with <provider>" on our login page, with
npm oidc-provider (tests/client/oidc_provider/upstream_idp.mjs) as the upstream OpenID Connect
provider whose dev login and consent pages Chromium fills in. The SDK ends with a session of a
new user that carries the upstream's verified email, and the server holds one identity for it."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from playwright.sync_api import Browser, Page

from agtest.server import NATIVE, ServerProcess, free_port, server_config
from agtest.services import Postgres
from agtest.upstream import UpstreamIdp, start_upstream_idp
from authgear import Authgear
from authgear.client import FileTokenStorage

REDIRECT = "http://127.0.0.1/callback"
LOOPBACK = re.compile(r"^http://127\.0\.0\.1:\d+/callback\?")
PROVIDER = "Example IdP"


@dataclass
class SsoBrowserServer:
    server: ServerProcess
    idp: UpstreamIdp

    def db(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """server.query off this thread (Playwright's sync API keeps an event loop running here,
        and the PostgreSQL query runs one of its own)."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(self.server.query, sql, *params).result()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sso_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SsoBrowserServer]:
    """Our server whose one identity provider, "good", is a client of oidc-provider."""
    port = free_port()
    idp = start_upstream_idp(f"http://127.0.0.1:{port}")
    config = server_config(port, identity_providers=[idp.provider("good", display_name=PROVIDER)])
    if request.param == "postgresql":
        pg: Postgres = request.getfixturevalue("postgres")
        config["database_url"] = pg.create_database(f"ag_{secrets.token_hex(6)}")
    server = ServerProcess(tmp_path_factory.mktemp("sso-browser") / "data", port, config)
    try:
        server.start()
        yield SsoBrowserServer(server, idp)
    finally:
        server.stop()
        idp.stop()


def _plain(value: object) -> object:
    """SQLite answers booleans as 0/1, PostgreSQL as bool."""
    return bool(value) if isinstance(value, int) else value


def sign_in_at_upstream(page: Page, idp: UpstreamIdp, login: str) -> None:
    """oidc-provider's dev interactions: the login form (any password), then the consent
    page. Its "Continue" sends the browser back to our callback and on to the app's redirect;
    the SDK's loopback listener answers only once the SDK has finished, after open_browser
    returns, so that last click does not wait for the navigation."""
    page.wait_for_url(re.compile("^" + re.escape(idp.issuer) + r"/interaction/"))
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile("^" + re.escape(idp.issuer) + r"/interaction/"))
    page.get_by_role("button", name="Continue").click(no_wait_after=True)


def test_sdk_authenticate_through_continue_with_provider_creates_a_user_with_the_verified_email(
    sso_server: SsoBrowserServer, browser: Browser, tmp_path: Path
) -> None:
    server, idp = sso_server.server, sso_server.idp
    login = f"u{secrets.token_hex(5)}"
    email = f"{login}@example.test"  # upstream_idp.mjs asserts it verified
    context = browser.new_context()
    context.set_default_timeout(20_000)
    # oidc-provider's dev pages link a web font; this machine has no internet.
    context.route(
        "https://fonts.googleapis.com/**",
        lambda route: route.fulfill(status=200, content_type="text/css", body=""),
    )
    page = context.new_page()
    seen: list[str] = []

    def sign_in(url: str) -> None:
        seen.append(url)
        page.goto(url)
        # Our login page offers the provider next to the password form.
        assert page.locator("#email").count() == 1
        button = page.get_by_role("button", name=f"Continue with {PROVIDER}")
        button.click()
        sign_in_at_upstream(page, idp, login)

    ag = Authgear(NATIVE, server.url, token_storage=FileTokenStorage(tmp_path))
    try:
        ag.configure()
        result = ag.authenticate(open_browser=sign_in, redirect_uri=REDIRECT, timeout=60)
        page.wait_for_url(LOOPBACK)
        assert "You are signed in" in page.content()
        assert seen and seen[0].startswith(server.url + "/oauth2/authorize?")

        info = ag.fetch_user_info()
        assert info.sub == result.sub
        assert info.email == email and info.email_verified is True
        assert info.is_anonymous is False

        # One new user, no password, whose one identity is the upstream account.
        users = sso_server.db(
            "SELECT id, email, email_verified, password_hash IS NULL FROM users WHERE id = ?",
            info.sub,
        )
        assert [tuple(map(_plain, row)) for row in users] == [(info.sub, email, True, True)]
        identities = sso_server.db(
            "SELECT user_id, provider, subject, email FROM identities WHERE user_id = ?",
            info.sub,
        )
        assert identities == [(info.sub, "good", login, email)]

        # The ID token the SDK keeps is ours, for this user; an upstream sign-in adds no amr.
        stored = ag.token_storage.load(ag.storage_key)
        assert stored is not None and stored.id_token is not None
        claims = jwt.decode(stored.id_token, options={"verify_signature": False})
        assert claims["iss"] == server.url and claims["sub"] == info.sub
        assert "amr" not in claims
        assert ag.refresh_access_token() is not None

        # Signed out of the app but not of the browser: the next authenticate() goes through
        # our browser session straight back, the same user, no second account.
        ag.logout()

        def again(url: str) -> None:
            # Navigate without waiting: the loopback answers only after open_browser returns.
            page.evaluate("url => { window.location.href = url }", url)

        second = ag.authenticate(open_browser=again, redirect_uri=REDIRECT, timeout=60)
        assert second.sub == info.sub
        count = sso_server.db("SELECT COUNT(*) FROM users WHERE email_key = ?", email)
        assert count == [(1,)]
    finally:
        ag.close()
        context.close()
