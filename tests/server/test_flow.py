"""The whole code + PKCE flow over HTTP through the real forms."""

from __future__ import annotations

import httpx2
import jwt
import pytest

from agtest.server import (
    NATIVE,
    Browser,
    Flow,
    ServerProcess,
    callback_params,
    exchange,
    login,
    new_email,
    refresh,
)

PASSWORD = "correct horse battery"
ROLES = "https://authgear.com/claims/user/roles"


def resolve(server: ServerProcess, **headers: str) -> httpx2.Response:
    r = httpx2.get(server.url + "/_resolver/resolve", headers=headers)
    assert r.status_code == 200
    assert r.content == b""
    return r


def test_signup_login_exchange_refresh_userinfo_revoke(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = new_email()

    # Sign up through the form; the callback carries code, state and the RFC 9207 issuer.
    cb, flow, browser = login(server, email, PASSWORD, signup=True)
    assert cb["state"] == flow.state
    assert cb["iss"] == server.url
    r = exchange(server, cb["code"], flow)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["pragma"] == "no-cache"
    tokens = r.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 1800
    grant_id, _, secret = tokens["refresh_token"].partition(".")
    assert grant_id and secret

    # Access token: RS256 at+jwt with Authgear's claims, verifiable with the JWKS.
    jwks = httpx2.get(server.url + "/oauth2/jwks").json()
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt"
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(
        tokens["access_token"], jwt.PyJWK(key).key, algorithms=["RS256"], audience=server.url
    )
    assert claims["iss"] == server.url
    assert claims["aud"] == [server.url]
    assert claims["client_id"] == NATIVE
    assert "offline_access" in claims["scope"].split()
    assert claims["https://authgear.com/claims/user/is_anonymous"] is False
    assert claims[ROLES] == []
    # The session the token belongs to (its app grant), for the revocation feed.
    assert claims["sid"] == grant_id
    for name in ("sub", "iat", "exp", "auth_time", "jti"):
        assert name in claims

    id_claims = jwt.decode(
        tokens["id_token"], jwt.PyJWK(key).key, algorithms=["RS256"], audience=NATIVE
    )
    assert id_claims["nonce"] == flow.nonce
    assert id_claims["sub"] == claims["sub"]
    assert id_claims["amr"] == ["pwd", "x_primary_password"]
    assert id_claims["exp"] - id_claims["iat"] == 300
    assert "sid" in id_claims

    # Userinfo.
    info = httpx2.get(
        server.url + "/oauth2/userinfo",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert info.status_code == 200
    body = info.json()
    assert body["sub"] == claims["sub"]
    assert body["email"] == email
    assert body["email_verified"] is False
    assert body["custom_attributes"] == {}
    assert body["https://authgear.com/claims/user/can_reauthenticate"] is True

    # Refresh: a public client's refresh token rotates by default (RFC 9700 §4.14.2).
    r2 = refresh(server, tokens["refresh_token"])
    assert r2.status_code == 200, r2.text
    refreshed = r2.json()
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert refreshed["access_token"] != tokens["access_token"]
    assert "id_token" in refreshed

    # Resolver: no credentials / invalid / valid.
    none = resolve(server)
    assert not any(h.lower().startswith("x-authgear-") for h in none.headers)
    bad = resolve(server, Authorization="Bearer not-a-token")
    assert bad.headers["x-authgear-session-valid"] == "false"
    assert "x-authgear-user-id" not in bad.headers
    ok = resolve(server, Authorization=f"bearer {refreshed['access_token']}")
    assert ok.headers["x-authgear-session-valid"] == "true"
    assert ok.headers["x-authgear-user-id"] == claims["sub"]
    assert ok.headers["x-authgear-user-anonymous"] == "false"
    assert ok.headers["x-authgear-user-verified"] == "false"
    assert ok.headers["x-authgear-user-can-reauthenticate"] == "true"
    assert ok.headers["x-authgear-session-amr"] == "pwd x_primary_password"
    assert int(ok.headers["x-authgear-session-authenticated-at"]) == claims["auth_time"]
    assert "x-authgear-user-roles" not in ok.headers
    head = httpx2.head(
        server.url + "/resolve", headers={"Authorization": f"Bearer {refreshed['access_token']}"}
    )
    assert head.headers["x-authgear-session-valid"] == "true"

    # Revoke the (superseded) refresh token: the grant and all its access tokens die with it.
    rv = httpx2.post(server.url + "/oauth2/revoke", data={"token": tokens["refresh_token"]})
    assert rv.status_code == 200 and rv.content == b""
    assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    gone = resolve(server, Authorization=f"Bearer {refreshed['access_token']}")
    assert gone.headers["x-authgear-session-valid"] == "false"
    denied = httpx2.get(
        server.url + "/oauth2/userinfo",
        headers={"Authorization": f"Bearer {refreshed['access_token']}"},
    )
    assert denied.status_code == 401
    assert denied.json() == {"error": "invalid_grant", "error_description": "invalid session"}
    assert 'error="invalid_grant"' in denied.headers["www-authenticate"]
    # Revoking again, or an unknown token, is still 200.
    assert httpx2.post(server.url + "/oauth2/revoke", data={"token": "nope"}).status_code == 200

    # The browser session skips the form on a second authorize.
    flow2 = Flow.new()
    r3 = browser.authorize(**flow2.params())
    cb2 = callback_params(r3)
    assert cb2["state"] == flow2.state
    tokens2 = exchange(server, cb2["code"], flow2).json()
    assert (
        jwt.decode(tokens2["access_token"], options={"verify_signature": False})["sub"]
        == claims["sub"]
    )

    # Cookie session at the resolver.
    cookie_res = browser.http.get("/_resolver/resolve")
    assert cookie_res.headers["x-authgear-session-valid"] == "true"

    # end_session: the cookie session ends and we go back to the registered URI with state.
    r4 = browser.http.get(
        "/oauth2/end_session",
        params={
            "id_token_hint": tokens2["id_token"],
            "post_logout_redirect_uri": "http://127.0.0.1/logged-out",
            "state": "bye",
        },
    )
    assert r4.status_code == 303
    assert r4.headers["location"] == "http://127.0.0.1/logged-out?state=bye"
    r5 = browser.authorize(**Flow.new().params())
    assert r5.headers["location"].startswith("/login?flow=")
    browser.close()


def test_login_existing_user_and_wrong_password(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    browser = Browser(server.url)
    flow = Flow.new()
    r = browser.authorize(**flow.params(login_hint=email))
    page_url = r.headers["location"]
    page = browser.http.get(page_url)
    assert f'value="{email}"' in page.text  # login_hint prefills the email
    wrong = browser.submit(page_url, email, "wrong password!")
    assert wrong.status_code == 401
    assert "Incorrect email or password." in wrong.text
    unknown = browser.submit(page_url, new_email(), "wrong password!")
    assert unknown.status_code == 401
    # Same message whether or not the email exists.
    assert "Incorrect email or password." in unknown.text
    ok = browser.submit(page_url, email.upper(), PASSWORD)
    cb = callback_params(ok)
    tokens = exchange(server, cb["code"], flow).json()
    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"] == user_id
    browser.close()


def test_prompt_login_forces_form_and_prompt_none_without_session(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    _, _, browser = login(server, new_email(), PASSWORD, signup=True)
    forced = browser.authorize(**Flow.new().params(prompt="login"))
    assert forced.headers["location"].startswith("/login?flow=")
    stranger = Browser(server.url)
    flow = Flow.new()
    none = stranger.authorize(**flow.params(prompt="none"))
    params = callback_params(none)
    assert params["error"] == "login_required"
    assert params["state"] == flow.state
    assert params["iss"] == server.url
    # max_age=0 with an existing session also needs a fresh login.
    aged = browser.authorize(**Flow.new().params(max_age="0"))
    assert aged.headers["location"].startswith("/login?flow=")
    browser.close()
    stranger.close()


def test_signup_page_selected_by_x_page_and_unknown_x_params_ignored(
    authgear_server: ServerProcess,
) -> None:
    browser = Browser(authgear_server.url)
    r = browser.authorize(
        **Flow.new().params(x_page="signup", x_color_scheme="dark", x_whatever="1")
    )
    assert r.status_code == 303
    assert r.headers["location"].startswith("/signup?flow=")
    page = browser.http.get(r.headers["location"])
    assert '<label for="email">' in page.text and '<label for="password">' in page.text
    browser.close()


@pytest.mark.parametrize("mode", ["fragment", "form_post"])
def test_response_modes(authgear_server: ServerProcess, mode: str) -> None:
    server = authgear_server
    _, _, browser = login(server, new_email(), PASSWORD, signup=True)
    flow = Flow.new()
    r = browser.authorize(**flow.params(response_mode=mode))
    if mode == "fragment":
        assert r.status_code == 303
        fragment = r.headers["location"].split("#", 1)[1]
        assert f"state={flow.state}" in fragment and "code=" in fragment
    else:
        assert r.status_code == 200
        assert f'action="{flow.redirect_uri}"' in r.text
        assert 'name="code"' in r.text and 'name="iss"' in r.text
    browser.close()


def test_device_info_from_native_sdks_is_kept(authgear_server: ServerProcess) -> None:
    import base64
    import json

    server = authgear_server
    info = {"ios": {"uname": {"machine": "iPhone15,2"}}}
    encoded = base64.urlsafe_b64encode(json.dumps(info).encode()).decode().rstrip("=")
    cb, flow, browser = login(server, new_email(), PASSWORD, signup=True)
    browser.close()
    tokens = exchange(server, cb["code"], flow, x_device_info=encoded).json()
    grant_id = tokens["refresh_token"].split(".")[0]
    # Garbage is ignored, never an error.
    cb2, flow2, b2 = login(server, new_email(), PASSWORD, signup=True)
    b2.close()
    assert exchange(server, cb2["code"], flow2, x_device_info="%%%not-base64").status_code == 200
    [(stored,)] = server.query("SELECT device_info FROM offline_grants WHERE id = ?", grant_id)
    assert (json.loads(stored) if isinstance(stored, str) else stored) == info
