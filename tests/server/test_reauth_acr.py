"""amr, acr, auth_time, max_age, id_token_hint and reauthentication over real HTTP (SQLite and
PostgreSQL), as the SDK's reauthenticate() sends them (max_age=0, id_token_hint, no
offline_access), and the attacks: a hint for someone else, a forged hint, a hint of another
client."""

from __future__ import annotations

import re
import time

import httpx2
import pytest

from agtest.mfa import (
    answer_totp,
    callback_query,
    claims,
    code,
    csrf_of,
    enrol_totp,
    finish_login,
    location,
    post_page,
    settle_totp_step,
    signed_in_browser,
    start_login,
    step_of,
)
from agtest.server import NATIVE, WEB, Browser, Flow, ServerProcess, new_email

PASSWORD = "correct horse battery"
MFA = "http://schemas.openid.net/pape/policies/2007/06/multi-factor"
FULL = "openid offline_access https://authgear.com/scopes/full-access"
REAUTH_SCOPE = "openid https://authgear.com/scopes/full-access"


def app_sign_in(server: ServerProcess, email: str) -> tuple[dict[str, object], Browser]:
    r, flow, browser = start_login(server, email, PASSWORD, scope=FULL)
    return finish_login(server, r, flow), browser


def age_sessions(server: ServerProcess, user_id: str, seconds: int) -> int:
    """Move the user's sign-in back in time (instead of sleeping); returns the new time."""
    then = int(time.time()) - seconds
    server.query("UPDATE idp_sessions SET authenticated_at = ? WHERE user_id = ?", then, user_id)
    server.query("UPDATE offline_grants SET authenticated_at = ? WHERE user_id = ?", then, user_id)
    return then


def test_reauthentication_refreshes_auth_time_of_the_browser_and_app_sessions(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    tokens, browser = app_sign_in(server, email)
    hint = str(tokens["id_token"])
    sid = claims(hint)["sid"]
    old = age_sessions(server, user_id, 600)
    flow = Flow.new()
    r = browser.authorize(**flow.params(scope=REAUTH_SCOPE, max_age="0", id_token_hint=hint))
    # No identify step: the hinted user confirms with their password.
    assert step_of(r) == "reauth"
    page = browser.http.get(location(r))
    assert email in page.text and 'name="email"' not in page.text
    wrong = browser.http.post(
        location(r), data={"csrf_token": csrf_of(page), "password": "not it at all"}
    )
    assert wrong.status_code == 401
    done = browser.http.post(location(r), data={"csrf_token": csrf_of(wrong), "password": PASSWORD})
    reauth = finish_login(server, done, flow)
    assert "refresh_token" not in reauth  # no offline_access: no new app session
    new = claims(str(reauth["id_token"]))
    assert new["sub"] == user_id and new["nonce"] == flow.nonce
    assert new["auth_time"] > old and new["amr"] == ["pwd", "x_primary_password"]
    # The browser session was re-authenticated in place (same session, new time and amr).
    assert new["sid"] == sid
    session = server.query("SELECT authenticated_at FROM idp_sessions WHERE id = ?", sid)
    assert session[0][0] == new["auth_time"]
    # The app session the hint named moved forward too; its refresh tokens now say so.
    grant = server.query("SELECT authenticated_at FROM offline_grants WHERE user_id = ?", user_id)
    assert grant == [(new["auth_time"],)]
    refreshed = httpx2.post(
        server.url + "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": NATIVE,
            "refresh_token": str(tokens["refresh_token"]),
        },
    ).json()
    assert claims(refreshed["id_token"])["auth_time"] == new["auth_time"]
    browser.close()


def test_reauthentication_in_a_fresh_browser_asks_the_second_factor_too(
    authgear_server: ServerProcess,
) -> None:
    """What a native app's reauthenticate() meets: a browser without the session cookie."""
    server = authgear_server
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    b = signed_in_browser(server, email, PASSWORD)
    secret, _ = enrol_totp(b)
    b.close()
    r, flow, browser = start_login(server, email, PASSWORD, scope=FULL)
    tokens = finish_login(server, answer_totp(browser, r, secret), flow)
    age_sessions(server, user_id, 600)
    fresh = Browser(server.url)
    flow2 = Flow.new()
    r2 = fresh.authorize(
        **flow2.params(scope=REAUTH_SCOPE, max_age="0", id_token_hint=str(tokens["id_token"]))
    )
    pw = post_page(fresh, location(r2), {"password": PASSWORD})
    assert step_of(pw) == "totp"
    settle_totp_step()
    done = post_page(fresh, location(pw), {"code": code(secret, 1)})
    new = claims(str(finish_login(server, done, flow2)["id_token"]))
    assert new["sub"] == user_id
    assert new["amr"] == ["mfa", "otp", "pwd", "x_primary_password", "x_secondary_totp"]
    browser.close()
    fresh.close()


def test_hint_for_another_user_than_the_browsers_never_uses_the_browsers_session(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    alice, bob = new_email(), new_email()
    server.create_user(alice, PASSWORD)
    bob_id = server.create_user(bob, PASSWORD)
    bob_tokens, bob_browser = app_sign_in(server, bob)
    bob_browser.close()
    _, browser = app_sign_in(server, alice)  # this browser is Alice's
    flow = Flow.new()
    r = browser.authorize(
        **flow.params(scope=REAUTH_SCOPE, max_age="0", id_token_hint=str(bob_tokens["id_token"]))
    )
    # Bob confirms it is him; Alice's session is no answer.
    assert step_of(r) == "reauth"
    assert bob in browser.http.get(location(r)).text
    done = post_page(browser, location(r), {"password": PASSWORD})
    assert claims(str(finish_login(server, done, flow)["id_token"]))["sub"] == bob_id
    # Without max_age, a hint for another user still never yields Alice's code silently.
    _, browser2 = app_sign_in(server, alice)
    r2 = browser2.authorize(**Flow.new().params(id_token_hint=str(bob_tokens["id_token"])))
    assert r2.status_code == 303 and not location(r2).startswith("http://127.0.0.1:5555")
    browser.close()
    browser2.close()


def test_expired_hint_signs_in_only_the_hinted_user(authgear_server: ServerProcess) -> None:
    server = authgear_server
    alice, bob = new_email(), new_email()
    server.create_user(alice, PASSWORD)
    bob_id = server.create_user(bob, PASSWORD)
    bob_tokens, b = app_sign_in(server, bob)
    b.close()
    # The hinted browser session is gone: no reauthentication, a login of Bob only.
    server.query("DELETE FROM idp_sessions WHERE user_id = ?", bob_id)
    browser = Browser(server.url)
    flow = Flow.new()
    r = browser.authorize(**flow.params(max_age="0", id_token_hint=str(bob_tokens["id_token"])))
    assert location(r).startswith("/login?flow=")
    page = browser.http.get(location(r))
    assert f'value="{bob}"' in page.text and "readonly" in page.text
    refused = browser.submit(location(r), alice, PASSWORD)
    assert refused.status_code == 400 and "This sign-in is for" in refused.text
    assert "session" not in browser.http.cookies
    ok = browser.submit(location(r), bob, PASSWORD)
    assert claims(str(finish_login(server, ok, flow)["id_token"]))["sub"] == bob_id
    browser.close()


@pytest.mark.parametrize("kind", ["forged", "other client", "garbage"])
def test_bad_id_token_hint_is_an_invalid_request(authgear_server: ServerProcess, kind: str) -> None:
    server = authgear_server
    email = new_email()
    server.create_user(email, PASSWORD)
    client = WEB if kind == "other client" else NATIVE
    start = Flow.new(client, "https://app.example.com/callback") if client == WEB else Flow.new()
    r, _, b = start_login(server, email, PASSWORD, flow=start, scope="openid")
    hint = str(finish_login(server, r, start)["id_token"])
    if kind == "forged":
        head, body, sig = hint.split(".")
        hint = f"{head}.{body}.{sig[::-1]}"
    elif kind == "garbage":
        hint = "not.a.jwt"
    flow = Flow.new()
    got = b.authorize(**flow.params(id_token_hint=hint))
    query = callback_query(got)
    assert query["error"] == "invalid_request" and "id_token_hint" in query["error_description"]
    assert query["state"] == flow.state
    b.close()


def test_max_age_is_measured_against_the_hinted_session(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    tokens, browser = app_sign_in(server, email)
    hint = str(tokens["id_token"])
    age_sessions(server, user_id, 120)
    recent = browser.authorize(**Flow.new().params(max_age="3600", id_token_hint=hint))
    assert "code" in callback_query(recent)
    old = browser.authorize(**Flow.new().params(max_age="60", id_token_hint=hint))
    assert step_of(old) == "reauth"
    # Without a hint the browser's session is the measure (OIDC Core).
    plain = browser.authorize(**Flow.new().params(max_age="60"))
    assert location(plain).startswith("/login?flow=")
    browser.close()


def test_prompt_none_rules(authgear_server: ServerProcess) -> None:
    server = authgear_server
    alice, bob = new_email(), new_email()
    server.create_user(alice, PASSWORD)
    server.create_user(bob, PASSWORD)
    bob_tokens, b = app_sign_in(server, bob)
    b.close()
    _, browser = app_sign_in(server, alice)
    with_age = callback_query(browser.authorize(**Flow.new().params(prompt="none", max_age="60")))
    assert with_age["error"] == "invalid_request"
    other = callback_query(
        browser.authorize(
            **Flow.new().params(prompt="none", id_token_hint=str(bob_tokens["id_token"]))
        )
    )
    assert other["error"] == "login_required"
    browser.close()


def test_acr_values_demand_a_second_factor_and_the_acr_claim_says_so(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    # No second factor yet (if_exists): the app's demand enrols one in the sign-in.
    r, flow, browser = start_login(server, email, PASSWORD, acr_values=MFA)
    assert step_of(r) == "enroll_totp"
    page = browser.http.get(location(r))
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page.text)
    assert secret
    settle_totp_step()
    codes = browser.http.post(
        location(r),
        data={"csrf_token": csrf_of(page), "code": code(secret.group(1).replace(" ", ""), -1)},
    )
    done = post_page(browser, location(codes), {})
    tokens = finish_login(server, done, flow)
    id_claims = claims(str(tokens["id_token"]))
    assert id_claims["acr"] == MFA and "mfa" in id_claims["amr"]
    assert claims(str(tokens["access_token"]))["acr"] == MFA
    # The session has mfa: the next demand is met at once.
    again = Flow.new()
    r2 = browser.authorize(**again.params(acr_values=MFA))
    assert claims(str(finish_login(server, r2, again)["id_token"]))["acr"] == MFA
    # Not asked: no acr.
    plain = Flow.new()
    r3 = browser.authorize(**plain.params())
    assert "acr" not in claims(str(finish_login(server, r3, plain)["id_token"]))
    assert server.query(
        "SELECT count(*) FROM authenticators WHERE user_id = ? AND kind = 'totp'", user_id
    ) == [(1,)]
    browser.close()


def test_a_trusted_browser_does_not_satisfy_an_mfa_demand(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = new_email()
    server.create_user(email, PASSWORD)
    b = signed_in_browser(server, email, PASSWORD)
    secret, _ = enrol_totp(b)
    b.close()
    r, flow, browser = start_login(server, email, PASSWORD)
    finish_login(server, answer_totp(browser, r, secret, trust_device="on"), flow)
    browser.http.cookies.delete("session")
    device = Flow.new()
    r2 = browser.submit(location(browser.authorize(**device.params())), email, PASSWORD)
    assert "mfa" not in claims(str(finish_login(server, r2, device)["id_token"]))["amr"]
    # The session (password + trusted device) has no mfa: a demand for it is a step-up.
    demand = Flow.new()
    r3 = browser.authorize(**demand.params(acr_values=MFA))
    assert step_of(r3) == "reauth"
    pw = post_page(browser, location(r3), {"password": PASSWORD})
    assert step_of(pw) == "totp"
    settle_totp_step()
    done = post_page(browser, location(pw), {"code": code(secret, 1)})
    assert claims(str(finish_login(server, done, demand)["id_token"]))["acr"] == MFA
    browser.close()


def test_discovery_and_userinfo(authgear_server: ServerProcess) -> None:
    server = authgear_server
    meta = httpx2.get(server.url + "/.well-known/openid-configuration").json()
    assert meta["acr_values_supported"] == [MFA]
    assert "acr" in meta["claims_supported"]
    email = new_email()
    server.create_user(email, PASSWORD)
    tokens, browser = app_sign_in(server, email)
    info = httpx2.get(
        server.url + "/oauth2/userinfo",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    ).json()
    # Authgear's userinfo has neither (accounts spec §1.4).
    assert "amr" not in info and "auth_time" not in info
    assert info["https://authgear.com/claims/user/can_reauthenticate"] is True
    browser.close()


def test_user_without_authenticators_cannot_reauthenticate(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    tokens, browser = app_sign_in(server, email)
    server.query("UPDATE users SET password_hash = NULL WHERE id = ?", user_id)
    refreshed = httpx2.post(
        server.url + "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": NATIVE,
            "refresh_token": str(tokens["refresh_token"]),
        },
    ).json()
    assert claims(refreshed["id_token"])["https://authgear.com/claims/user/can_reauthenticate"] is (
        False
    )
    resolved = httpx2.get(
        server.url + "/_resolver/resolve",
        headers={"Authorization": f"Bearer {refreshed['access_token']}"},
    )
    assert resolved.headers["x-authgear-user-can-reauthenticate"] == "false"
    browser.close()
