"""Interop: the official Authgear web SDK (npm @authgear/web v6) in headless Chromium, against us.

A small static app (web_sdk/app/) loads the IIFE bundle the npm package ships and uses the SDK as
Authgear's docs do, with ``sessionType: "refresh_token"``. A stdlib HTTP server on a free loopback
port serves it at http://localhost:<port> (another site than the auth server at
http://127.0.0.1:<port>, so every SDK call to the server is a CORS request), together with a small
backend, ``/api/me``, that asks our ``/_resolver/resolve`` about the incoming Authorization header.
The test drives the real sign-up and login pages, and "Continue with <provider>" with npm
oidc-provider as the upstream identity provider (issue 15). scripts/test runs ``npm ci`` in
web_sdk/.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import jwt
import pyotp
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    Route,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from agtest.mfa import settle_totp_step
from agtest.server import ServerProcess, new_email
from agtest.upstream import UpstreamIdp, start_upstream_idp

pytestmark = [pytest.mark.interop, pytest.mark.browser]

WEB_SDK_DIR = Path(__file__).parent / "web_sdk"
APP_DIR = WEB_SDK_DIR / "app"
SDK_BUNDLE = WEB_SDK_DIR / "node_modules" / "@authgear" / "web" / "dist" / "authgear-web.iife.js"
CLIENT_ID = "web-sdk-app"
PASSWORD = "correct horse battery"
# Where the SDK keeps the refresh token: localStorage, key for the container named "default".
REFRESH_TOKEN_KEY = "authgear_default_refreshToken"
STATIC = {
    "/": (APP_DIR / "index.html", "text/html"),
    "/index.html": (APP_DIR / "index.html", "text/html"),
    "/callback.html": (APP_DIR / "callback.html", "text/html"),
    "/app.js": (APP_DIR / "app.js", "text/javascript"),
    "/sdk/authgear-web.iife.js": (SDK_BUNDLE, "text/javascript"),
}


@dataclass
class WebApp:
    """The app's origin, the auth server behind it, and what the backend saw."""

    origin: str
    server: ServerProcess
    backend_calls: list[dict[str, str | None]] = field(default_factory=list)

    @property
    def redirect_uri(self) -> str:
        return self.origin + "/callback.html"

    def config_js(self) -> bytes:
        config = {
            "clientID": CLIENT_ID,
            "endpoint": self.server.url,
            "redirectURI": self.redirect_uri,
            "postLogoutRedirectURI": self.origin + "/",
            "backendURL": "/api/me",
        }
        return f"window.APP_CONFIG = {json.dumps(config)};\n".encode()

    def resolve(self, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """The backend: 200 with the user id when the resolver says the session is valid."""
        self.backend_calls.append({"authorization": authorization})
        if authorization is None:
            return 401, {"error": "not signed in"}
        r = httpx2.get(
            self.server.url + "/_resolver/resolve",
            headers={"Authorization": authorization},
            timeout=10,
        )
        if r.status_code != 200 or r.headers.get("x-authgear-session-valid") != "true":
            return 401, {"error": "invalid session"}
        return 200, {"user_id": r.headers["x-authgear-user-id"]}


def _handler(web: WebApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/config.js":
                self._send(200, "text/javascript", web.config_js())
            elif path == "/api/me":
                status, body = web.resolve(self.headers.get("Authorization"))
                self._send(status, "application/json", json.dumps(body).encode())
            elif path in STATIC:
                file, content_type = STATIC[path]
                self._send(200, content_type, file.read_bytes())
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type + "; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def web_app(fresh_server: ServerProcess) -> Iterator[WebApp]:
    if not SDK_BUNDLE.is_file():
        pytest.fail(f"{SDK_BUNDLE} missing: run scripts/test (it runs npm ci in {WEB_SDK_DIR})")

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            # Chromium may drop a connection mid-response (a navigation cancels a load).
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    httpd = Server(("127.0.0.1", 0), BaseHTTPRequestHandler)
    origin = f"http://localhost:{httpd.server_address[1]}"
    web = WebApp(origin, fresh_server)
    httpd.RequestHandlerClass = _handler(web)  # the handler needs the port, known only now
    fresh_server.config["clients"].append(
        {
            "id": CLIENT_ID,
            "name": "Web SDK test app",
            "redirect_uris": [web.redirect_uri],
            "post_logout_redirect_uris": [origin + "/"],
            "allowed_origins": [origin],
        }
    )
    fresh_server.start()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield web
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class Trace:
    """Console errors, failed requests and HTTP errors of the page, for assertion messages."""

    lines: list[str] = field(default_factory=list)
    _answered: set[Request] = field(default_factory=set, repr=False)

    def attach(self, page: Page) -> None:
        self._page = page
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.lines.append(f"pageerror: {e}"))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def _console(self, msg: ConsoleMessage) -> None:
        # Neither our server nor the app has a favicon: not the SDK's business.
        if msg.type in ("error", "warning") and "/favicon.ico" not in msg.location.get("url", ""):
            self.lines.append(f"console.{msg.type}: {msg.text} ({msg.location.get('url')})")

    def _request_failed(self, request: Request) -> None:
        # The SDK never reads the (empty) body of the revocation response; Chromium then reports
        # the request as net::ERR_ABORTED after its 200 arrived. Only failures without a response
        # count.
        if request not in self._answered:
            self.lines.append(f"failed: {request.method} {request.url} {request.failure}")

    def _response(self, response: Response) -> None:
        self._answered.add(response.request)
        if response.status >= 400:
            try:
                body = response.text()[:300]
            except Exception:  # the body may be gone (a preflight, a navigation)
                body = "?"
            method = response.request.method
            self.lines.append(f"HTTP {response.status}: {method} {response.url} {body}")

    def expect_errors(self, *expected: str) -> None:
        """Assert the errors since the last check are these ("401 /path"), then forget them.

        Playwright delivers page events while the test waits, so wait (up to 5 s) for each one.
        """
        for _ in range(100):
            if set(expected) <= self._errors():
                break
            self._page.wait_for_timeout(50)
        self._page.wait_for_timeout(50)  # and anything else that is still on its way
        assert self._errors() == set(expected), f"expected errors {expected}, got:\n{self}"
        self.lines.clear()

    def _errors(self) -> set[str]:
        seen = set()
        for line in self.lines:
            m = re.search(r"status of (\d+) .*\((\S+)\)$", line) or re.match(
                r"HTTP (\d+): \w+ (\S+)", line
            )
            seen.add(f"{m[1]} {urlsplit(m[2]).path}" if m else line)
        return seen

    def __str__(self) -> str:
        return "\n".join(self.lines) or "(no console errors, no failed requests)"


def _call(page: Page, trace: Trace, expr: str) -> Any:
    """Run one of window.app's helpers; return its value, or fail with the page's trace."""
    result = page.evaluate(expr)
    assert result["ok"], f"{expr} failed: {result['error']}\n{trace}"
    return result["value"]


def _wait_ready(page: Page, trace: Trace) -> None:
    page.wait_for_function("window.app && window.app.ready")
    configured = page.evaluate("app.configureResult")
    assert configured["ok"], f"configure() failed: {configured}\n{trace}"


def _wait_for_url(page: Page, trace: Trace, prefix: str) -> None:
    try:
        page.wait_for_url(re.compile("^" + re.escape(prefix)))
    except PlaywrightTimeoutError:
        started = page.evaluate("window.app ? app.signInResult : null")
        pytest.fail(
            f"never reached {prefix}, at {page.url}\n"
            f"startAuthentication(): {started}\nbrowser trace:\n{trace}"
        )


def _sign_in_click(page: Page, trace: Trace, server: ServerProcess, button: str) -> None:
    """Click a sign-in button of the app: startAuthentication() goes to our authorize."""
    page.get_by_role("button", name=button).click()
    _wait_for_url(page, trace, server.url + "/")


def _back_in_app(web: WebApp, page: Page, trace: Trace) -> dict[str, Any]:
    """Wait for the redirect page to finish; return finishAuthentication()'s result."""
    _wait_for_url(page, trace, web.redirect_uri + "?")
    _wait_ready(page, trace)
    finish = page.evaluate("app.finishResult")
    assert finish["ok"], f"finishAuthentication() failed: {finish['error']}\n{trace}"
    assert page.evaluate("app.sessionState()") == "AUTHENTICATED"
    assert page.evaluate("app.events") == [
        {"state": "NO_SESSION", "reason": "NO_TOKEN"},
        {"state": "AUTHENTICATED", "reason": "AUTHENTICATED"},
    ]
    value: dict[str, Any] = finish["value"]
    return value


def _open_app(web: WebApp, page: Page, trace: Trace) -> None:
    page.goto(web.origin + "/")
    _wait_ready(page, trace)


def _sign_in_again(web: WebApp, page: Page, trace: Trace, email: str) -> str:
    """Sign in from a page with no session; return the new refresh token."""
    _open_app(web, page, trace)
    assert page.evaluate("app.events") == [{"state": "NO_SESSION", "reason": "NO_TOKEN"}]
    page.get_by_role("button", name="Sign in").click()
    # The browser still has our IdP session cookie: authorize goes straight back to the app.
    finished = _back_in_app(web, page, trace)
    assert finished["userInfo"]["email"] == email
    token = _stored_refresh_token(page)
    assert token is not None
    return token


def _stored_refresh_token(page: Page) -> str | None:
    value: str | None = page.evaluate(f"localStorage.getItem({REFRESH_TOKEN_KEY!r})")
    return value


def _verify_access_token(server: ServerProcess, token: str) -> dict[str, Any]:
    """Verify a JWT access token with our JWKS, as a backend would."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt"
    key = jwt.PyJWKClient(server.url + "/oauth2/jwks").get_signing_key(header["kid"])
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=server.url, issuer=server.url
    )
    return claims


def _refresh_grant(server: ServerProcess, refresh_token: str) -> httpx2.Response:
    return httpx2.post(
        server.url + "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": CLIENT_ID,
            "refresh_token": refresh_token,
        },
        timeout=10,
    )


def _revoke(server: ServerProcess, token: str) -> None:
    r = httpx2.post(server.url + "/oauth2/revoke", data={"token": token}, timeout=10)
    assert r.status_code == 200, r.text


@pytest.fixture
def app_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[tuple[Page, Trace]]:
    context: BrowserContext = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    trace = Trace()
    trace.attach(page)
    failed_before = request.session.testsfailed
    try:
        yield page, trace
    finally:
        if request.session.testsfailed > failed_before:
            print(f"browser trace:\n{trace}")
            folder = request.config.rootpath / "test-artifacts"
            folder.mkdir(exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")[:180]
            try:
                page.screenshot(path=folder / f"{name}.png", full_page=True)
            except Exception as e:  # the test's own failure matters more
                print(f"could not save a screenshot: {e}")
        context.close()


def test_web_sdk_signup_userinfo_fetch_refresh_and_revocation(
    web_app: WebApp, app_page: tuple[Page, Trace]
) -> None:
    web, server = web_app, web_app.server
    page, trace = app_page
    email = new_email()

    # Sign up through the SDK: startAuthentication({page: "signup"}) opens our sign-up page.
    _open_app(web, page, trace)
    assert page.evaluate("app.sessionState()") == "NO_SESSION"
    _sign_in_click(page, trace, server, "Sign up")
    assert page.title().startswith("Create account"), page.title()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()

    # Back on the redirect page, finishAuthentication() exchanged the code and fetched userinfo.
    finished = _back_in_app(web, page, trace)
    user = finished["userInfo"]
    assert user["email"] == email
    assert user["isAnonymous"] is False
    assert re.fullmatch(r"[0-9a-f-]{36}", user["sub"]), user["sub"]
    assert page.locator("#result").inner_text() == f"Signed in as {email}"
    refresh_token = _stored_refresh_token(page)
    assert refresh_token is not None and re.fullmatch(r"[^.]+\.[^.]+", refresh_token)

    # fetchUserInfo() calls our userinfo with the access token.
    info = _call(page, trace, "app.fetchUserInfo()")
    assert info["sub"] == user["sub"] and info["email"] == email

    # The access token is a JWT our JWKS verifies, for this user and client.
    access_token = page.evaluate("app.accessToken()")
    claims = _verify_access_token(server, access_token)
    assert claims["sub"] == user["sub"] and claims["client_id"] == CLIENT_ID

    # authgear.fetch() sends the Bearer header; the backend resolves it through our resolver.
    backend = _call(page, trace, "app.callBackend()")
    assert backend == {"status": 200, "body": {"user_id": user["sub"]}}
    assert web.backend_calls[-1]["authorization"] == f"Bearer {access_token}"

    # A fresh access token is not refreshed again.
    assert _call(page, trace, "app.refreshAccessTokenIfNeeded()") == access_token

    # A new page load: configure() finds the stored refresh token (no network), and
    # refreshAccessTokenIfNeeded() runs the refresh grant for a new access token.
    _open_app(web, page, trace)
    assert page.evaluate("app.events") == [{"state": "AUTHENTICATED", "reason": "FOUND_TOKEN"}]
    assert page.evaluate("app.accessToken()") is None
    refreshed = _call(page, trace, "app.refreshAccessTokenIfNeeded()")
    assert refreshed and refreshed != access_token
    refreshed_claims = _verify_access_token(server, refreshed)
    assert refreshed_claims["sub"] == user["sub"] and refreshed_claims["jti"] != claims["jti"]
    # Public clients rotate refresh tokens by default (RFC 9700 §4.14.2); the SDK keeps the new
    # one.
    rotated = _stored_refresh_token(page)
    assert rotated and rotated != refresh_token
    assert _call(page, trace, "app.fetchUserInfo()")["sub"] == user["sub"]
    assert _call(page, trace, "app.callBackend()")["status"] == 200
    assert web.backend_calls[-1]["authorization"] == f"Bearer {refreshed}"

    # The refresh token is revoked elsewhere (RFC 7009). The SDK does not know yet: its
    # unexpired access token still goes out, and our resolver refuses it at once.
    _revoke(server, rotated)
    assert _call(page, trace, "app.callBackend()") == {
        "status": 401,
        "body": {"error": "invalid session"},
    }
    assert web.backend_calls[-1]["authorization"] == f"Bearer {refreshed}"
    trace.expect_errors("401 /api/me")
    # fetchUserInfo() gets 401 invalid_grant: the SDK clears the session and rejects.
    failed = page.evaluate("app.fetchUserInfo()")
    assert failed["ok"] is False, failed
    assert failed["error"]["oauthError"] is True
    assert failed["error"]["error"] == "invalid_grant"
    assert page.evaluate("app.sessionState()") == "NO_SESSION"
    assert page.evaluate("app.events")[-1] == {"state": "NO_SESSION", "reason": "INVALID"}
    assert page.evaluate("app.accessToken()") is None
    assert _stored_refresh_token(page) is None
    trace.expect_errors("401 /oauth2/userinfo")
    # With no session, authgear.fetch() sends no Authorization header.
    assert _call(page, trace, "app.callBackend()")["status"] == 401
    assert web.backend_calls[-1]["authorization"] is None
    trace.expect_errors("401 /api/me")

    # Sign in again, revoke, then a new page load: the refresh grant fails with invalid_grant,
    # the SDK clears the session, and refreshAccessTokenIfNeeded() itself does not reject.
    second = _sign_in_again(web, page, trace, email)
    assert second != refresh_token
    _revoke(server, second)
    _open_app(web, page, trace)
    assert page.evaluate("app.sessionState()") == "AUTHENTICATED"
    assert _call(page, trace, "app.refreshAccessTokenIfNeeded()") is None
    assert page.evaluate("app.events") == [
        {"state": "AUTHENTICATED", "reason": "FOUND_TOKEN"},
        {"state": "NO_SESSION", "reason": "INVALID"},
    ]
    assert _stored_refresh_token(page) is None
    trace.expect_errors("400 /oauth2/token")

    # logout(): the SDK revokes its refresh token at our revocation endpoint and clears.
    third = _sign_in_again(web, page, trace, email)
    assert _refresh_grant(server, third).status_code == 200
    _call(page, trace, "app.logout()")
    assert page.evaluate("app.sessionState()") == "NO_SESSION"
    assert page.evaluate("app.events")[-1] == {"state": "NO_SESSION", "reason": "LOGOUT"}
    assert _stored_refresh_token(page) is None
    after = _refresh_grant(server, third)
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant", after.text
    assert not trace.lines, f"unexpected browser errors:\n{trace}"


def test_web_sdk_login_of_an_existing_user(web_app: WebApp, app_page: tuple[Page, Trace]) -> None:
    """startAuthentication() without a page option shows our login page."""
    web, server = web_app, web_app.server
    page, trace = app_page
    email = new_email()
    user_id = server.create_user(email, PASSWORD)

    _open_app(web, page, trace)
    _sign_in_click(page, trace, server, "Sign in")
    assert page.title().startswith("Sign in"), page.title()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Incorrect email or password."
    trace.expect_errors("401 /login")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    finished = _back_in_app(web, page, trace)
    assert finished["userInfo"]["email"] == email
    assert finished["userInfo"]["sub"] == user_id
    backend = _call(page, trace, "app.callBackend()")
    assert backend == {"status": 200, "body": {"user_id": finished["userInfo"]["sub"]}}
    assert not trace.lines, f"unexpected browser errors:\n{trace}"


@pytest.fixture
def mfa_required(fresh_server: ServerProcess) -> None:
    fresh_server.config["authentication"] = {"secondary_authentication_mode": "required"}


def test_web_sdk_sign_in_with_a_required_second_factor(
    mfa_required: None, web_app: WebApp, app_page: tuple[Page, Trace]
) -> None:
    """secondary_authentication_mode: required. A user without a second factor enrols an
    authenticator app during the SDK's sign-in (QR code and key on our page, a pyotp code), sees
    the recovery codes once, and lands back in the app with mfa in the token's amr; the next
    sign-in asks for the code."""
    web, server = web_app, web_app.server
    page, trace = app_page
    email = new_email()
    server.create_user(email, PASSWORD)

    _open_app(web, page, trace)
    _sign_in_click(page, trace, server, "Sign in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/flow/enroll_totp\?flow="))
    assert page.locator("figure.qr svg").count() == 1
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    settle_totp_step()
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).at(time.time() - 30))
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    page.wait_for_url(re.compile(r".*/flow/recovery_codes\?flow="))
    assert page.locator("#recovery-codes li").count() == 10
    page.get_by_role("button", name="I have saved my codes").click()
    finished = _back_in_app(web, page, trace)
    assert finished["userInfo"]["email"] == email
    claims = _verify_access_token(server, page.evaluate("app.accessToken()"))
    assert claims["amr"] == ["mfa", "otp", "pwd", "x_primary_password", "x_secondary_totp"]

    # Signed out of the app and of the browser session: the next sign-in asks for the code.
    _call(page, trace, "app.logout()")
    page.context.clear_cookies()
    _open_app(web, page, trace)
    _sign_in_click(page, trace, server, "Sign in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/flow/totp\?flow="))
    page.get_by_label("Code").fill(pyotp.TOTP(secret).at(time.time()))
    page.get_by_role("button", name="Verify").click()
    again = _back_in_app(web, page, trace)
    assert again["userInfo"]["email"] == email
    assert not trace.lines, f"unexpected browser errors:\n{trace}"


UPSTREAM = "Example IdP"


@pytest.fixture
def upstream_idp(fresh_server: ServerProcess) -> Iterator[UpstreamIdp]:
    """oidc-provider (tests/client/oidc_provider/upstream_idp.mjs) as our identity provider
    "good", configured before web_app starts the server."""
    idp = start_upstream_idp(fresh_server.url)
    fresh_server.config["identity_providers"] = [idp.provider("good", display_name=UPSTREAM)]
    try:
        yield idp
    finally:
        idp.stop()


def _empty_css(route: Route) -> None:
    route.fulfill(status=200, content_type="text/css", body="")


@pytest.fixture
def sso_web_app(upstream_idp: UpstreamIdp, web_app: WebApp) -> WebApp:
    return web_app  # upstream_idp first: the server starts with the provider in its config


def test_web_sdk_sign_in_through_continue_with_an_upstream_provider(
    upstream_idp: UpstreamIdp, sso_web_app: WebApp, app_page: tuple[Page, Trace]
) -> None:
    """startAuthentication() opens our login page; "Continue with Example IdP" goes to
    oidc-provider, whose login and consent pages Chromium fills in; our callback creates the
    user with the upstream's verified email and finishes the app's authorization."""
    web, server, idp = sso_web_app, sso_web_app.server, upstream_idp
    page, trace = app_page
    login = f"u{secrets.token_hex(5)}"
    email = f"{login}@example.test"  # upstream_idp.mjs asserts it verified
    # oidc-provider's dev pages link a web font; this machine has no internet.
    page.route("https://fonts.googleapis.com/**", _empty_css)

    _open_app(web, page, trace)
    _sign_in_click(page, trace, server, "Sign in")
    assert page.title().startswith("Sign in"), page.title()
    page.get_by_role("button", name=f"Continue with {UPSTREAM}").click()
    _wait_for_url(page, trace, idp.issuer + "/interaction/")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    _wait_for_url(page, trace, idp.issuer + "/interaction/")
    page.get_by_role("button", name="Continue").click()

    finished = _back_in_app(web, page, trace)
    user = finished["userInfo"]
    assert user["email"] == email and user["emailVerified"] is True
    assert user["isAnonymous"] is False
    assert page.locator("#result").inner_text() == f"Signed in as {email}"
    info = _call(page, trace, "app.fetchUserInfo()")
    assert info["sub"] == user["sub"] and info["email"] == email
    claims = _verify_access_token(server, page.evaluate("app.accessToken()"))
    assert claims["sub"] == user["sub"] and claims["client_id"] == CLIENT_ID
    backend = _call(page, trace, "app.callBackend()")
    assert backend == {"status": 200, "body": {"user_id": user["sub"]}}

    # One identity, the upstream account, for this new user.
    with ThreadPoolExecutor(1) as pool:  # off Playwright's event loop (PostgreSQL)
        rows = pool.submit(
            server.query,
            "SELECT user_id, provider, subject, email FROM identities WHERE subject = ?",
            login,
        ).result()
    assert rows == [(user["sub"], "good", login, email)]

    # Signed out of the app only: the next sign-in goes through our browser session, same user.
    _call(page, trace, "app.logout()")
    assert _sign_in_again(web, page, trace, email)
    assert _call(page, trace, "app.fetchUserInfo()")["sub"] == user["sub"]
    assert not trace.lines, f"unexpected browser errors:\n{trace}"
