"""RP-initiated logout (OIDC RP-Initiated Logout 1.0) and CSRF on the pages (issue 9 points 8
and 9, issue 18 point 3), over HTTP against the real server.

Attacks: a bare cross-site GET /oauth2/end_session signed the user out; a hint for someone
else's session; a *tossed* CSRF cookie (set by a sibling subdomain or another port of the same
host: cookies ignore ports) with a known value let a forged POST through; a token obtained in
the attacker's own browser; a POST from a foreign origin.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import jwt
import pytest

from agtest.server import (
    CSRF_RE,
    NATIVE,
    WEB,
    Browser,
    Flow,
    ServerProcess,
    exchange,
    free_port,
    login,
    new_email,
    server_config,
)

PASSWORD = "correct horse battery"
LOGGED_OUT = "http://127.0.0.1/logged-out"  # NATIVE's registered post-logout URI
WEB_LOGGED_OUT = "https://app.example.com/"  # WEB's


class Victim:
    """A signed-in browser, with an ID token of its own session (for NATIVE)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        cb, flow, self.browser = login(server, new_email(), PASSWORD, signup=True, scope="openid")
        self.id_token = exchange(server, cb["code"], flow).json()["id_token"]
        self.sid = jwt.decode(self.id_token, options={"verify_signature": False})["sid"]

    @property
    def http(self) -> httpx2.Client:
        return self.browser.http

    def signed_in(self) -> bool:
        r = self.browser.authorize(**Flow.new().params())
        assert r.status_code == 303
        return not r.headers["location"].startswith("/login")

    def csrf(self, path: str) -> str:
        m = CSRF_RE.search(self.http.get(path).text)
        assert m
        return m.group(1)


@pytest.fixture
def victim(authgear_server: ServerProcess) -> Iterator[Victim]:
    v = Victim(authgear_server)
    yield v
    v.browser.close()


def assert_confirmation_page(r: httpx2.Response) -> None:
    assert r.status_code == 200, r.text
    assert "Sign out?" in r.text and 'action="/oauth2/end_session"' in r.text
    assert "location" not in r.headers


# -- RP-initiated logout -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_end_session_without_id_token_hint_asks_first_and_keeps_the_session(
    victim: Victim, method: str
) -> None:
    params = {"post_logout_redirect_uri": LOGGED_OUT, "client_id": NATIVE, "state": "s"}
    if method == "GET":
        r = victim.http.get("/oauth2/end_session", params=params)
    else:
        r = victim.http.post("/oauth2/end_session", data=params)
    assert_confirmation_page(r)
    assert 'name="post_logout_redirect_uri" value="http://127.0.0.1/logged-out"' in r.text
    assert victim.signed_in()


def test_end_session_with_the_hint_of_another_users_session_asks_first(
    authgear_server: ServerProcess, victim: Victim
) -> None:
    attacker = Victim(authgear_server)
    attacker.browser.close()
    r = victim.http.get("/oauth2/end_session", params={"id_token_hint": attacker.id_token})
    assert_confirmation_page(r)
    assert victim.signed_in()


@pytest.mark.parametrize(
    "hint",
    [
        "not-a-jwt",
        jwt.encode({"aud": NATIVE, "sub": "x"}, "k" * 32, algorithm="HS256"),
        "eyJhbGciOiJub25lIn0.eyJhdWQiOiJ0ZXN0LW5hdGl2ZSJ9.",
    ],
)
def test_end_session_with_a_forged_hint_asks_first(victim: Victim, hint: str) -> None:
    assert_confirmation_page(victim.http.get("/oauth2/end_session", params={"id_token_hint": hint}))
    assert victim.signed_in()


def test_end_session_with_this_sessions_hint_signs_out_and_returns_with_state(
    victim: Victim,
) -> None:
    r = victim.http.get(
        "/oauth2/end_session",
        params={
            "id_token_hint": victim.id_token,
            "post_logout_redirect_uri": LOGGED_OUT,
            "state": "bye",
        },
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"{LOGGED_OUT}?state=bye"
    assert not victim.signed_in()


@pytest.mark.parametrize(
    "uri",
    [
        WEB_LOGGED_OUT,  # registered, but for another client than the hint's
        "http://evil.example\\@127.0.0.1/logged-out",
        "http://user@127.0.0.1/logged-out",
        "http://127.0.0.1/logged-out#x",
        "https://evil.example/",
    ],
)
def test_post_logout_redirect_uri_not_registered_for_the_hints_client_stays_on_our_page(
    victim: Victim, uri: str
) -> None:
    r = victim.http.get(
        "/oauth2/end_session",
        params={"id_token_hint": victim.id_token, "post_logout_redirect_uri": uri},
    )
    assert r.status_code == 200 and "location" not in r.headers
    assert "You have signed out" in r.text and "not registered" in r.text


def test_end_session_whose_client_id_contradicts_the_hint_is_an_error(victim: Victim) -> None:
    r = victim.http.get(
        "/oauth2/end_session", params={"id_token_hint": victim.id_token, "client_id": WEB}
    )
    assert r.status_code == 400 and "location" not in r.headers
    assert victim.signed_in()


def test_confirmed_sign_out_with_our_csrf_token_ends_the_session_and_returns(
    victim: Victim,
) -> None:
    """The official web SDK's cookie mode sends only post_logout_redirect_uri."""
    page = victim.http.get(
        "/oauth2/end_session", params={"post_logout_redirect_uri": WEB_LOGGED_OUT}
    )
    assert_confirmation_page(page)
    m = CSRF_RE.search(page.text)
    assert m
    r = victim.http.post(
        "/oauth2/end_session",
        data={
            "csrf_token": m.group(1),
            "confirm": "yes",
            "post_logout_redirect_uri": WEB_LOGGED_OUT,
        },
    )
    assert r.status_code == 303 and r.headers["location"] == WEB_LOGGED_OUT
    assert not victim.signed_in()


# -- CSRF --------------------------------------------------------------------------------------

KNOWN = "attacker-known-csrf-nonce-0123456789"


def _forged_posts(victim: Victim, token: str) -> dict[str, httpx2.Response]:
    """Each state-changing page of the victim, posted with ``token``."""
    data = {"csrf_token": token}
    return {
        "logout": victim.http.post("/logout", data=data),
        "settings": victim.http.post(f"/settings/sessions/{victim.sid}/revoke", data=data),
        "end_session": victim.http.post("/oauth2/end_session", data={**data, "confirm": "yes"}),
    }


def assert_refused(results: dict[str, httpx2.Response]) -> None:
    """Nothing changed: 403, or for end_session the confirmation page again."""
    for name, r in results.items():
        if name == "end_session":
            assert_confirmation_page(r)
        else:
            assert r.status_code == 403, (name, r.status_code)


def test_tossed_csrf_cookie_with_a_known_value_cannot_forge_a_post(victim: Victim) -> None:
    # A sibling (another port, or a subdomain) overwrote the victim's CSRF cookie.
    victim.http.cookies.set("authgear_csrf", KNOWN, domain="127.0.0.1", path="/")
    assert_refused(_forged_posts(victim, KNOWN))
    assert victim.signed_in()


def test_csrf_token_from_the_attackers_own_browser_does_not_work_in_the_victims(
    authgear_server: ServerProcess, victim: Victim
) -> None:
    attacker = Victim(authgear_server)
    try:
        token = attacker.csrf("/settings/sessions")
        nonce = attacker.http.cookies["authgear_csrf"]
    finally:
        attacker.browser.close()
    victim.http.cookies.set("authgear_csrf", nonce, domain="127.0.0.1", path="/")
    assert_refused(_forged_posts(victim, token))
    assert victim.signed_in()


def test_login_token_of_one_flow_does_not_sign_in_through_another(
    authgear_server: ServerProcess,
) -> None:
    email = new_email()
    authgear_server.create_user(email, PASSWORD)
    browser = Browser(authgear_server.url)
    try:
        first = browser.authorize(**Flow.new().params()).headers["location"]
        second = browser.authorize(**Flow.new().params()).headers["location"]
        m = CSRF_RE.search(browser.http.get(first).text)
        assert m
        r = browser.http.post(
            second, data={"csrf_token": m.group(1), "email": email, "password": PASSWORD}
        )
        assert r.status_code == 403
    finally:
        browser.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "null"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "__SELF__"},
    ],
)
def test_post_from_a_foreign_origin_is_refused_even_with_a_valid_token(
    authgear_server: ServerProcess, victim: Victim, headers: dict[str, str]
) -> None:
    headers = {k: authgear_server.url if v == "__SELF__" else v for k, v in headers.items()}
    token = victim.csrf("/")
    r = victim.http.post("/logout", data={"csrf_token": token}, headers=headers)
    assert r.status_code == 403
    assert victim.signed_in()
    # The same post from our own origin goes through.
    own = {"Origin": authgear_server.url, "Sec-Fetch-Site": "same-origin"}
    assert victim.http.post("/logout", data={"csrf_token": token}, headers=own).status_code == 303
    assert not victim.signed_in()


@pytest.mark.parametrize("path", ["/login", "/signup", "/", "/oauth2/end_session"])
def test_pages_cannot_be_framed_and_leak_no_referrer_to_other_origins(
    authgear_server: ServerProcess, path: str
) -> None:
    """Clickjacking (RFC 9700 §4.16) and Referer leaks (§4.2)."""
    r = httpx2.get(authgear_server.url + path)
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    # same-origin, not no-referrer: a browser then sends our Origin on our own form posts.
    assert r.headers["referrer-policy"] == "same-origin"


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Behind a (pretend) TLS proxy: the public origin is https."""
    port = free_port()
    config = server_config(port, public_origin="https://auth.example.test")
    server = ServerProcess(tmp_path_factory.mktemp("https"), port, config)
    server.start()
    yield server
    server.stop()


def test_under_https_the_csrf_cookie_is_host_prefixed_and_a_plain_one_is_ignored(
    https_server: ServerProcess,
) -> None:
    page = httpx2.get(https_server.url + "/login")
    set_cookie = [v for k, v in page.headers.multi_items() if k == "set-cookie"]
    assert len(set_cookie) == 1, set_cookie
    name, _, rest = set_cookie[0].partition("=")
    assert name == "__Host-authgear_csrf"
    attributes = {a.strip().split("=")[0].lower() for a in rest.split(";")[1:]}
    assert {"secure", "httponly", "path"} <= attributes and "domain" not in attributes
    assert "Path=/" in set_cookie[0]
    nonce = rest.split(";", 1)[0]
    token = CSRF_RE.search(page.text)
    assert token
    email = new_email()
    https_server.create_user(email, PASSWORD)
    form = {"csrf_token": token.group(1), "email": email, "password": PASSWORD}
    # A plain authgear_csrf cookie (which a sibling could toss) does not count under https.
    plain = httpx2.post(
        https_server.url + "/login", data=form, headers={"Cookie": f"authgear_csrf={nonce}"}
    )
    assert plain.status_code == 403
    real = httpx2.post(
        https_server.url + "/login", data=form, headers={"Cookie": f"__Host-authgear_csrf={nonce}"}
    )
    assert real.status_code == 303, real.text
