"""Negative cases at the token endpoint: each answers the spec's error shape, never a 500."""

from __future__ import annotations

import base64
import time

import httpx2
import pytest

from agtest.server import (
    CONFIDENTIAL,
    CONFIDENTIAL_SECRET,
    NATIVE,
    ROTATING,
    WEB_REDIRECT,
    Flow,
    ServerProcess,
    exchange,
    login,
    new_email,
    refresh,
    tokens_for,
)

# Request validation and error shapes, not storage: SQLite only (tests/conftest.py).
STORAGES = ("sqlite",)

PASSWORD = "correct horse battery"


def token(server: ServerProcess, **data: str) -> httpx2.Response:
    return httpx2.post(server.url + "/oauth2/token", data=data)


def assert_error(
    r: httpx2.Response, error: str, description: str | None = None, status: int = 400
) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error, body
    if description is not None:
        assert body["error_description"] == description
    assert r.headers["cache-control"] == "no-store"


def fresh_code(server: ServerProcess, client_id: str = NATIVE) -> tuple[str, Flow]:
    cb, flow, browser = login(server, new_email(), PASSWORD, flow=Flow.new(client_id), signup=True)
    browser.close()
    return cb["code"], flow


def test_wrong_verifier(authgear_server: ServerProcess) -> None:
    code, flow = fresh_code(authgear_server)
    r = exchange(authgear_server, code, flow, code_verifier="x" * 43)
    assert_error(r, "invalid_grant", "invalid PKCE code verifier")


def test_missing_verifier(authgear_server: ServerProcess) -> None:
    code, flow = fresh_code(authgear_server)
    r = token(
        authgear_server,
        grant_type="authorization_code",
        client_id=NATIVE,
        code=code,
        redirect_uri=flow.redirect_uri,
    )
    assert_error(r, "invalid_request", "PKCE code verifier is required")


def test_code_reuse_fails_and_revokes_first_tokens(authgear_server: ServerProcess) -> None:
    server = authgear_server
    code, flow = fresh_code(server)
    first = exchange(server, code, flow)
    assert first.status_code == 200
    tokens = first.json()
    assert_error(exchange(server, code, flow), "invalid_grant", "invalid authorization code")
    # The tokens of the first exchange are revoked too.
    assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    info = httpx2.get(
        server.url + "/oauth2/userinfo",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert info.status_code == 401


def test_expired_code(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["authorization_code_lifetime"] = 1
    server.start()
    code, flow = fresh_code(server)
    time.sleep(2.1)
    assert_error(exchange(server, code, flow), "invalid_grant", "invalid authorization code")


def test_wrong_redirect_uri_at_exchange(authgear_server: ServerProcess) -> None:
    code, flow = fresh_code(authgear_server)
    r = exchange(authgear_server, code, flow, redirect_uri="http://127.0.0.1:5556/callback")
    # RFC 6749 §5.2: a redirect URI that differs from the authorization request's is invalid_grant.
    assert_error(r, "invalid_grant", "invalid redirect URI")


def test_unknown_client_and_wrong_client(authgear_server: ServerProcess) -> None:
    code, flow = fresh_code(authgear_server)
    r = exchange(authgear_server, code, flow, client_id="nobody")
    assert_error(r, "invalid_client", "invalid client ID")
    r = exchange(authgear_server, code, flow, client_id=ROTATING)
    assert_error(r, "invalid_grant", "invalid authorization code")


def test_missing_fields(authgear_server: ServerProcess) -> None:
    assert_error(token(authgear_server), "invalid_request")
    assert_error(
        token(authgear_server, grant_type="authorization_code", client_id=NATIVE),
        "invalid_request",
        "code is required",
    )
    assert_error(
        token(authgear_server, grant_type="password", client_id=NATIVE), "unsupported_grant_type"
    )
    assert_error(
        token(authgear_server, grant_type="refresh_token", client_id=NATIVE), "invalid_request"
    )


def test_refresh_of_revoked_grant_and_garbage(authgear_server: ServerProcess) -> None:
    server = authgear_server
    tokens, _ = tokens_for(server)
    httpx2.post(server.url + "/oauth2/revoke", data={"token": tokens["refresh_token"]})
    assert_error(refresh(server, tokens["refresh_token"]), "invalid_grant", "invalid refresh token")
    for garbage in ("", "abc", "a.b", "." * 10, "x" * 600, "ünïcode.☃"):
        r = refresh(server, garbage)
        assert r.status_code == 400
        assert r.json()["error"] in ("invalid_grant", "invalid_request")


def test_refresh_with_other_client(authgear_server: ServerProcess) -> None:
    tokens, _ = tokens_for(authgear_server)
    r = refresh(authgear_server, tokens["refresh_token"], client_id=ROTATING)
    assert_error(r, "invalid_request", "client id doesn't match the refresh token")


def test_rotation_and_reuse_detection(authgear_server: ServerProcess) -> None:
    server = authgear_server
    tokens, _ = tokens_for(server, ROTATING)
    first = tokens["refresh_token"]
    r1 = refresh(server, first, ROTATING)
    assert r1.status_code == 200
    second = r1.json()["refresh_token"]
    assert second != first and second.split(".")[0] == first.split(".")[0]
    # The client's own retry within the grace period gets the same successor.
    retry = refresh(server, first, ROTATING)
    assert retry.status_code == 200
    assert retry.json()["refresh_token"] == second
    r2 = refresh(server, second, ROTATING)
    assert r2.status_code == 200
    third = r2.json()["refresh_token"]
    # After the grace period (2 s in the test config), reuse of a rotated token ends the grant.
    time.sleep(2.2)
    assert_error(refresh(server, first, ROTATING), "invalid_grant")
    assert_error(refresh(server, third, ROTATING), "invalid_grant")


def test_concurrent_refresh_with_rotation_all_succeed_with_one_successor(
    authgear_server: ServerProcess,
) -> None:
    import concurrent.futures

    server = authgear_server
    tokens, _ = tokens_for(server, ROTATING)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: refresh(server, tokens["refresh_token"], ROTATING), range(8))
        )
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len({r.json()["refresh_token"] for r in results}) == 1


def test_confidential_client(authgear_server: ServerProcess) -> None:
    server = authgear_server
    # client_credentials with Basic auth.
    basic = base64.b64encode(f"{CONFIDENTIAL}:{CONFIDENTIAL_SECRET}".encode()).decode()
    r = httpx2.post(
        server.url + "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r.status_code == 200, r.text
    assert "refresh_token" not in r.json() and "id_token" not in r.json()
    # Wrong secret via Basic: 401 with a challenge; via the body: 400.
    wrong = base64.b64encode(f"{CONFIDENTIAL}:nope".encode()).decode()
    r = httpx2.post(
        server.url + "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {wrong}"},
    )
    assert_error(r, "invalid_client", status=401)
    assert r.headers["www-authenticate"].startswith("Basic")
    r = token(server, grant_type="client_credentials", client_id=CONFIDENTIAL, client_secret="nope")
    assert_error(r, "invalid_client")
    # Body credentials win over Basic.
    r = httpx2.post(
        server.url + "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CONFIDENTIAL,
            "client_secret": CONFIDENTIAL_SECRET,
        },
        headers={"Authorization": f"Basic {wrong}"},
    )
    assert r.status_code == 200
    # A public client cannot use client_credentials.
    assert_error(
        token(server, grant_type="client_credentials", client_id=NATIVE), "unauthorized_client"
    )
    # The code flow for a confidential client needs its secret; PKCE is optional.
    browser_cb, flow, browser = login(
        server, new_email(), PASSWORD, flow=Flow.new(CONFIDENTIAL, WEB_REDIRECT), signup=True
    )
    browser.close()
    base = {
        "grant_type": "authorization_code",
        "code": browser_cb["code"],
        "redirect_uri": WEB_REDIRECT,
        "code_verifier": flow.verifier,
        "client_id": CONFIDENTIAL,
    }
    assert_error(token(server, **base), "invalid_client")
    r = token(server, **base, client_secret=CONFIDENTIAL_SECRET)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({"Content-Type": "application/json"}, b'{"grant_type": "refresh_token"}'),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"grant_type=refresh_token&grant_type=x",
        ),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"\xff\xfe\xfd"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"a=" + b"x" * 70000),
        (
            {"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic !!!"},
            b"grant_type=client_credentials",
        ),
        (
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": "Basic " + base64.b64encode(b"nocolon").decode(),
            },
            b"grant_type=client_credentials",
        ),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"grant_type=refresh_token&client_id=" + b"c" * 5000,
        ),
    ],
)
def test_malformed_requests(
    authgear_server: ServerProcess, headers: dict[str, str], content: bytes
) -> None:
    r = httpx2.post(authgear_server.url + "/oauth2/token", headers=headers, content=content)
    assert r.status_code in (400, 401, 413), r.text
    assert r.json()["error"] in ("invalid_request", "invalid_client")
