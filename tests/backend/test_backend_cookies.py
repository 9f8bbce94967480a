"""Cookie or bearer: the backend knows which, cookies are opt-in, and a cookie never carries a
forged cross-site state change (issue 18.7).

The attack: a page on another origin (or another port of the same host, which shares the
cookie) makes a signed-in browser POST to the API; the browser attaches Authgear's session
cookie, and resolver mode used to accept it as if it were a Bearer login.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from backend_support import PASSWORD, BackendProcess, example_backend

from agtest.server import Browser, ServerProcess, free_port, new_email, tokens_for


@pytest.fixture(scope="module")
def session_cookie(authgear_server: ServerProcess) -> str:
    """The IdP session cookie of a user signed in through the real login form."""
    email = new_email()
    authgear_server.create_user(email, PASSWORD)
    browser = Browser(authgear_server.url)
    try:
        assert browser.http.get("/login").status_code == 200
        r = browser.submit("/login", email, PASSWORD)
        assert r.status_code in (302, 303), r.text[:300]
        cookie = browser.http.cookies.get("session")
        assert cookie
        return str(cookie)
    finally:
        browser.close()


@pytest.fixture(scope="module")
def cookie_backend(
    authgear_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendProcess]:
    """The example in resolver mode with cookie authentication turned on (--cookies)."""
    tmp = tmp_path_factory.mktemp("cookies")
    backend = example_backend("fastapi", "resolver", authgear_server.url, tmp, "--cookies")
    yield backend
    backend.stop()


def test_resolver_reports_the_credential_type(
    authgear_server: ServerProcess, session_cookie: str
) -> None:
    url = authgear_server.url + "/_resolver/resolve"
    r = httpx2.get(url, cookies={"session": session_cookie})
    assert r.headers["x-authgear-session-valid"] == "true"
    assert r.headers["x-authgear-credential"] == "cookie"
    token = tokens_for(authgear_server)[0]["access_token"]
    r = httpx2.get(url, headers={"authorization": f"Bearer {token}"})
    assert r.headers["x-authgear-credential"] == "bearer"
    assert "x-authgear-credential" not in httpx2.get(url).headers


def test_cookie_is_ignored_unless_the_api_opts_in(
    fastapi_resolver: BackendProcess, session_cookie: str
) -> None:
    for method, path in (("GET", "/api/me"), ("POST", "/api/notes")):
        r = httpx2.request(
            method,
            fastapi_resolver.url + path,
            cookies={"session": session_cookie},
            headers={"origin": fastapi_resolver.url},
        )
        assert r.status_code == 401, (method, r.text)
        assert r.headers["www-authenticate"] == 'Bearer realm="api"'


def test_cookie_login_is_reported_as_cookie(
    cookie_backend: BackendProcess, session_cookie: str
) -> None:
    r = httpx2.get(cookie_backend.url + "/api/me", cookies={"session": session_cookie})
    assert r.status_code == 200, r.text
    assert r.json()["credential"] == "cookie" and r.json()["amr"] == ["pwd", "x_primary_password"]
    r = httpx2.get(cookie_backend.url + "/api/me", cookies={"session": "forged"})
    assert r.status_code == 401


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "null",
        "https://evil.example",
        "http://127.0.0.1:<another port>",  # another port of the same host shares the cookie
        "http://localhost",
        "not an origin",
    ],
)
def test_attack_cross_origin_post_with_session_cookie_is_403(
    cookie_backend: BackendProcess, session_cookie: str, origin: str | None
) -> None:
    if origin is not None and "<another port>" in origin:
        # Picked at run time (not in the test id: every xdist worker must collect the same ids).
        origin = origin.replace("<another port>", str(free_port()))
    headers = {"origin": origin} if origin is not None else {}
    r = httpx2.post(
        cookie_backend.url + "/api/notes", cookies={"session": session_cookie}, headers=headers
    )
    assert r.status_code == 403, r.text
    assert r.json()["detail"]["error"] == "cross_origin_request"
    assert "www-authenticate" not in r.headers


def test_same_origin_cookie_post_and_bearer_post_pass(
    cookie_backend: BackendProcess, session_cookie: str, authgear_server: ServerProcess
) -> None:
    r = httpx2.post(
        cookie_backend.url + "/api/notes",
        cookies={"session": session_cookie},
        headers={"origin": cookie_backend.url},
    )
    assert r.status_code == 200, r.text
    assert r.json()["credential"] == "cookie"
    # A Bearer token cannot be forged cross-site: no Origin needed.
    token = tokens_for(authgear_server)[0]["access_token"]
    r = httpx2.post(cookie_backend.url + "/api/notes", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["credential"] == "bearer"


def test_cookie_module_refusals_direct() -> None:
    """The origin check itself, on canned requests (a pure function)."""
    from authgear.backend import CrossOriginRequest, SimpleRequest
    from authgear.backend._request import check_cookie_request

    allowed = frozenset({"https://app.example.com"})
    ok = SimpleRequest({"origin": "https://APP.example.com:443"}, method="DELETE")
    check_cookie_request(ok, allowed)
    check_cookie_request(SimpleRequest({}, method="GET"), allowed)  # safe methods pass
    for origin in ("https://app.example.com.evil.example", "http://app.example.com"):
        with pytest.raises(CrossOriginRequest):
            check_cookie_request(SimpleRequest({"origin": origin}, method="PUT"), allowed)
    same_host = SimpleRequest(
        {"origin": "https://api.example.com", "host": "api.example.com"}, method="POST"
    )
    check_cookie_request(same_host, frozenset())
    with pytest.raises(CrossOriginRequest):
        check_cookie_request(
            SimpleRequest({"origin": "https://api.example.com"}, method="POST"), frozenset()
        )
