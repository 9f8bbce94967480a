"""Authorization request validation, redirect URI rules, CORS, CSRF and bad input."""

from __future__ import annotations

import socket
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from agtest.server import (
    NATIVE,
    OPAQUE,
    WEB,
    WEB_ORIGIN,
    WEB_REDIRECT,
    Browser,
    Flow,
    ServerProcess,
    exchange,
    login,
    new_email,
)

# Request validation and error shapes, not storage: SQLite only (tests/conftest.py).
STORAGES = ("sqlite",)

PASSWORD = "correct horse battery"


def authorize(server: ServerProcess, **params: str) -> httpx2.Response:
    return httpx2.get(server.url + "/oauth2/authorize", params=params)


def raw_status(server: ServerProcess, request: bytes) -> int:
    """Send bytes no HTTP client would, and read the status code."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        head = sock.recv(1024)
    return int(head.split(b" ", 2)[1])


def redirected_error(r: httpx2.Response) -> dict[str, str]:
    assert r.status_code == 303, r.text
    q = parse_qs(urlsplit(r.headers["location"]).query)
    return {k: v[0] for k, v in q.items()}


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://127.0.0.1:5555/callback",
        "http://127.0.0.1:1/callback",
        "http://127.0.0.1/callback",
    ],
)
def test_loopback_redirect_any_port(authgear_server: ServerProcess, redirect_uri: str) -> None:
    r = authorize(authgear_server, **Flow.new(redirect_uri=redirect_uri).params())
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?flow=")


@pytest.mark.parametrize(
    ("client_id", "redirect_uri"),
    [
        (NATIVE, "http://127.0.0.1:5555/other"),
        (NATIVE, "http://127.0.0.2:5555/callback"),
        (NATIVE, "http://evil.example.com/callback"),
        (NATIVE, "https://127.0.0.1:5555/callback"),
        (NATIVE, "http://127.0.0.1:5555/callback?x=1"),
        (NATIVE, "http://127.0.0.1:99999/callback"),
        (NATIVE, ""),
        (WEB, "https://app.example.com:444/callback"),
        (WEB, "https://app.example.com/callback/"),
        (WEB, "https://APP.example.com/callback"),
    ],
)
def test_unregistered_redirect_uri_is_an_error_page(
    authgear_server: ServerProcess, client_id: str, redirect_uri: str
) -> None:
    params = Flow.new(client_id, redirect_uri).params()
    r = authorize(authgear_server, **params)
    assert r.status_code == 400
    assert "location" not in r.headers
    assert "text/html" in r.headers["content-type"]
    assert "redirect URI" in r.text


def test_exact_match_for_web_client(authgear_server: ServerProcess) -> None:
    r = authorize(authgear_server, **Flow.new(WEB, WEB_REDIRECT).params())
    assert r.status_code == 303 and r.headers["location"].startswith("/login?flow=")


def test_unknown_client_is_an_error_page(authgear_server: ServerProcess) -> None:
    r = authorize(authgear_server, **Flow.new("nobody").params())
    assert r.status_code == 400
    assert "location" not in r.headers
    assert "not registered" in r.text
    assert authorize(authgear_server).status_code == 400


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"scope": "openid admin"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"prompt": "bogus"}, "invalid_request"),
        ({"max_age": "-1"}, "invalid_request"),
        ({"max_age": "abc"}, "invalid_request"),
    ],
)
def test_invalid_requests_redirect_with_error(
    authgear_server: ServerProcess, change: dict[str, str | None], error: str
) -> None:
    flow = Flow.new()
    params = flow.params()
    for k, v in change.items():
        if v is None:
            params.pop(k, None)
        else:
            params[k] = v
    q = redirected_error(authorize(authgear_server, **params))
    assert q["error"] == error
    assert q["state"] == flow.state
    assert q["iss"] == authgear_server.url
    assert q["error_description"]


def test_oversized_and_duplicated_parameters(authgear_server: ServerProcess) -> None:
    params = Flow.new().params(state="s" * 5000)
    r = authorize(authgear_server, **params)
    assert r.status_code == 400 and "location" not in r.headers
    url = authgear_server.url + "/oauth2/authorize?client_id=a&client_id=b"
    assert httpx2.get(url).status_code == 400
    huge = b"GET /oauth2/authorize?x=" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert raw_status(authgear_server, huge) in (400, 414, 431)
    assert httpx2.get(authgear_server.url + "/oauth2/authorize?%ff%fe=%ff").status_code == 400


def test_authorize_post(authgear_server: ServerProcess) -> None:
    r = httpx2.post(authgear_server.url + "/oauth2/authorize", data=Flow.new().params())
    assert r.status_code == 303 and r.headers["location"].startswith("/login?flow=")


def test_csrf_is_required(authgear_server: ServerProcess) -> None:
    browser = Browser(authgear_server.url)
    r = browser.authorize(**Flow.new().params())
    page_url = r.headers["location"]
    browser.http.get(page_url)
    posted = browser.http.post(
        page_url,
        data={
            "csrf_token": "forged-token-value-123456",
            "email": new_email(),
            "password": PASSWORD,
        },
    )
    assert posted.status_code == 403
    # Another browser (no flow-binding cookie) cannot use the flow at all, even with a token.
    stranger = httpx2.post(
        authgear_server.url + page_url, data={"email": new_email(), "password": PASSWORD}
    )
    assert stranger.status_code == 400 and "expired" in stranger.text
    browser.close()


def test_expired_or_unknown_flow(authgear_server: ServerProcess) -> None:
    r = httpx2.get(authgear_server.url + "/login?flow=doesnotexist")
    assert r.status_code == 400 and "expired" in r.text


def test_signup_validation(authgear_server: ServerProcess) -> None:
    browser = Browser(authgear_server.url)
    page = browser.authorize(**Flow.new().params(x_page="signup")).headers["location"]
    short = browser.submit(page, new_email(), "short")
    assert short.status_code == 400 and "at least 8" in short.text
    bad_email = browser.submit(page, "not-an-email", PASSWORD)
    assert bad_email.status_code == 400 and "valid email" in bad_email.text
    for hostile in ("a\x1b[2J@example.com", "a@exa\x00mple.com", "a@example.com\x85x"):
        refused = browser.submit(page, hostile, PASSWORD)
        assert refused.status_code == 400 and "valid email" in refused.text
    email = new_email()
    assert browser.submit(page, email, PASSWORD).status_code == 303
    other = Browser(authgear_server.url)
    page2 = other.authorize(**Flow.new().params(x_page="signup")).headers["location"]
    taken = other.submit(page2, email.upper(), PASSWORD)
    assert taken.status_code == 400
    assert "could not create an account" in taken.text
    browser.close()
    other.close()


def test_cors_for_allowed_origins(authgear_server: ServerProcess) -> None:
    url = authgear_server.url
    pre = httpx2.options(
        url + "/oauth2/token",
        headers={"Origin": WEB_ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == WEB_ORIGIN
    assert pre.headers["access-control-allow-credentials"] == "true"
    for path in ("/.well-known/openid-configuration", "/oauth2/jwks"):
        r = httpx2.get(url + path, headers={"Origin": WEB_ORIGIN})
        assert r.headers["access-control-allow-origin"] == WEB_ORIGIN
    evil = httpx2.get(url + "/oauth2/jwks", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in evil.headers
    denied = httpx2.options(url + "/oauth2/token", headers={"Origin": "https://evil.example.com"})
    assert denied.status_code == 403


def test_discovery_documents(authgear_server: ServerProcess) -> None:
    a = httpx2.get(authgear_server.url + "/.well-known/openid-configuration").json()
    b = httpx2.get(authgear_server.url + "/.well-known/oauth-authorization-server").json()
    assert a == b
    assert a["issuer"] == authgear_server.url
    assert a["code_challenge_methods_supported"] == ["S256"]
    assert a["authorization_response_iss_parameter_supported"] is True
    for key in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "revocation_endpoint",
        "end_session_endpoint",
        "jwks_uri",
    ):
        assert a[key].startswith(authgear_server.url + "/")
    jwks = httpx2.get(a["jwks_uri"]).json()
    assert all(k["alg"] == "RS256" and k["use"] == "sig" and "d" not in k for k in jwks["keys"])


def test_opaque_access_tokens(authgear_server: ServerProcess) -> None:
    server = authgear_server
    cb, flow, browser = login(server, new_email(), PASSWORD, flow=Flow.new(OPAQUE), signup=True)
    browser.close()
    tokens = exchange(server, cb["code"], flow).json()
    assert tokens["access_token"].count(".") == 0
    assert tokens["expires_in"] == 300
    info = httpx2.get(
        server.url + "/oauth2/userinfo",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert info.status_code == 200


def test_scope_without_offline_access_gets_no_refresh_token(authgear_server: ServerProcess) -> None:
    server = authgear_server
    cb, flow, browser = login(server, new_email(), PASSWORD, signup=True, scope="openid")
    tokens = exchange(server, cb["code"], flow).json()
    assert "refresh_token" not in tokens
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert httpx2.get(server.url + "/oauth2/userinfo", headers=auth).status_code == 200
    # The token belongs to the browser session: signing out there ends it.
    browser.http.get("/oauth2/end_session", params={"id_token_hint": tokens["id_token"]})
    assert httpx2.get(server.url + "/oauth2/userinfo", headers=auth).status_code == 401
    browser.close()


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Basic abc",
        "Bearer a b",
        "Token xyz",
        "Bearer " + "x" * 9000,
        "bearer\tx",
        "Bearer \u00e9t\u00e9",
    ],
)
def test_malformed_authorization_headers(authgear_server: ServerProcess, header: str) -> None:
    value = header.encode("latin-1")
    info = httpx2.get(authgear_server.url + "/oauth2/userinfo", headers={"Authorization": value})
    assert info.status_code == 401
    assert info.json()["error"] == "invalid_grant"
    res = httpx2.get(authgear_server.url + "/_resolver/resolve", headers={"Authorization": value})
    assert res.status_code == 200
    assert res.headers.get("x-authgear-user-id") is None


def test_end_session_with_unregistered_uri_stays(authgear_server: ServerProcess) -> None:
    r = httpx2.get(
        authgear_server.url + "/oauth2/end_session",
        params={"post_logout_redirect_uri": "https://evil.example.com/", "client_id": NATIVE},
    )
    assert r.status_code == 200
    assert "location" not in r.headers
    assert "signed out" in r.text


def test_unknown_path_and_method(authgear_server: ServerProcess) -> None:
    assert httpx2.get(authgear_server.url + "/nope").status_code == 404
    assert httpx2.get(authgear_server.url + "/oauth2/token").status_code == 405
    assert httpx2.delete(authgear_server.url + "/oauth2/userinfo").status_code == 405
