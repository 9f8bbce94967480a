"""Sign in with an upstream identity provider (issue 15) over HTTP, against a real
oidc-provider (tests/client/oidc_provider/upstream_idp.mjs) and a GitHub-like stub, on SQLite
and PostgreSQL. Every refusal is checked on the page the user sees, in the database (no user
created, nothing linked) and, where it matters, in what reached the provider."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urljoin

import jwt
import pytest
from sso_support import (
    HOSTILE,
    SsoServer,
    follow,
    new_login,
    sign_in_app,
    sso_to_callback,
    start_authorize,
)

from agtest.pages import csrf_of
from agtest.server import callback_params, exchange, new_email
from agtest.upstream import (
    GithubUser,
    click_provider,
    error_text,
    query_of,
    upstream_cancel,
    with_query,
)

UNVERIFIABLE = "its answer could not be verified"
STALE = "not for a sign-in in progress in this browser"


def claims_of(id_token: str) -> dict[str, object]:
    return jwt.decode(id_token, options={"verify_signature": False})


def refused_page(sso: SsoServer, c: object, callback: str) -> str:
    """Deliver the provider's answer; it must come back to our sign-in page with an error."""
    r = c.get(callback)  # type: ignore[attr-defined]
    assert r.status_code == 303, (r.status_code, r.text[:300])
    assert "/oauth2/" not in r.headers["location"]  # no code for the app
    page = follow(c, r)  # type: ignore[arg-type]
    assert page.status_code == 200
    return error_text(page.text)


# -- signing in ----------------------------------------------------------------------------------


def test_first_sign_in_creates_a_verified_user_without_amr_then_the_same_user_again(
    sso: SsoServer,
) -> None:
    login = new_login()
    c, cb, flow = sign_in_app(sso, "good", login)
    r = exchange(sso.server, cb["code"], flow)
    assert r.status_code == 200, r.text
    claims = claims_of(r.json()["id_token"])
    assert "amr" not in claims  # an upstream sign-in adds no amr (Authgear)
    assert claims["https://authgear.com/claims/user/can_reauthenticate"] is False
    rows = sso.identities("good", login)
    assert len(rows) == 1 and rows[0][0] == claims["sub"]
    # No password; email_verified from the provider's assertion.
    assert sso.users_with_email(f"{login}@example.test") == [(claims["sub"], True, True)]
    c.close()
    c2, cb2, flow2 = sign_in_app(sso, "good", login)
    c2.close()
    r2 = exchange(sso.server, cb2["code"], flow2)
    assert claims_of(r2.json()["id_token"])["sub"] == claims["sub"]
    assert len(sso.identities("good", login)) == 1


def test_client_secret_post_and_email_from_userinfo(sso: SsoServer) -> None:
    for alias in ("post-auth", "userinfo"):
        login = new_login()
        _c, cb, flow = sign_in_app(sso, alias, login)
        sub = claims_of(exchange(sso.server, cb["code"], flow).json()["id_token"])["sub"]
        assert sso.identities(alias, login)[0][0] == sub
        assert sso.users_with_email(f"{login}@example.test") == [(sub, True, True)]


def test_sign_in_from_the_login_page_without_an_app_lands_on_next(sso: SsoServer) -> None:
    c = sso.client()
    login = new_login()
    callback = sso_to_callback(c, sso.url + "/login?next=/settings", "good", login)
    r = c.get(callback)
    assert r.status_code == 303 and r.headers["location"] == "/settings"
    assert c.get("/settings").status_code == 200


# -- hostile answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "reason"),
    [
        ("wrong-iss", "iss"),
        ("wrong-aud", "aud"),
        ("bad-sig", "signature"),
        ("expired", "exp"),
        ("no-nonce", "nonce"),
        ("bad-nonce", "nonce"),
    ],
)
def test_hostile_id_token_is_refused_with_a_clear_page_and_no_account(
    sso: SsoServer, alias: str, reason: str
) -> None:
    assert alias in HOSTILE
    c = sso.client()
    page, _flow = start_authorize(c)
    login = new_login()
    message = refused_page(sso, c, sso_to_callback(c, page, alias, login))
    assert UNVERIFIABLE in message
    assert f"sso {alias}: answer refused: {reason}:" in sso.server.log()
    assert sso.identities(alias, login) == []
    assert sso.users_with_email(f"{login}@example.test") == []
    assert c.cookies.get("session") is None


def test_unknown_kid_fetches_the_jwks_again_once_then_refuses(sso: SsoServer) -> None:
    before = sso.idp.stats()["jwks"]
    for _ in range(2):
        c = sso.client()
        page, _flow = start_authorize(c)
        login = new_login()
        assert UNVERIFIABLE in refused_page(sso, c, sso_to_callback(c, page, "unknown-kid", login))
        assert sso.identities("unknown-kid", login) == []
    # The first forged kid refetched the keys once; the second, within the cooldown, did not.
    assert sso.idp.stats()["jwks"] - before == 1
    assert "answer refused: signature: no key with the token's kid" in sso.server.log()


def test_replayed_state_is_refused_and_creates_nothing_more(sso: SsoServer) -> None:
    c = sso.client()
    page, flow = start_authorize(c)
    login = new_login()
    callback = sso_to_callback(c, page, "good", login)
    cb = callback_params(c.get(callback))
    assert exchange(sso.server, cb["code"], flow).status_code == 200
    tokens_before = sso.idp.stats()["token"]
    again = c.get(callback)
    assert again.status_code in (400, 409)
    assert STALE in error_text(again.text)
    assert sso.idp.stats()["token"] == tokens_before  # the code was not redeemed twice
    assert len(sso.identities("good", login)) == 1


def test_answer_opened_in_another_browser_is_refused_login_csrf(sso: SsoServer) -> None:
    """An attacker's own answer (their account) planted in the victim's browser."""
    attacker = sso.client()
    page, _flow = start_authorize(attacker)
    callback = sso_to_callback(attacker, page, "good", new_login())
    victim = sso.client()
    r = victim.get(callback)
    assert r.status_code == 400 and STALE in error_text(r.text)
    assert "session" not in r.cookies and victim.cookies.get("session") is None


def test_code_of_another_flow_is_refused_and_that_flow_still_works(sso: SsoServer) -> None:
    c = sso.client()
    page_a, flow_a = start_authorize(c)
    login = new_login()
    callback_a = sso_to_callback(c, page_a, "good", login)
    page_b, _flow_b = start_authorize(c)
    callback_b = sso_to_callback(c, page_b, "good", new_login())
    # B's state (its pending request) with A's code: A's PKCE verifier is not B's.
    swapped = with_query(callback_b, code=query_of(callback_a)["code"])
    assert UNVERIFIABLE in refused_page(sso, c, swapped)
    assert "answer refused: token_exchange" in sso.server.log()
    assert sso.identities("good", login) == []
    # A's own answer is still good (its pending request was not touched).
    cb = callback_params(c.get(callback_a))
    assert exchange(sso.server, cb["code"], flow_a).status_code == 200


def test_mix_up_iss_parameter_of_another_issuer_is_refused_before_the_code_is_used(
    sso: SsoServer,
) -> None:
    c = sso.client()
    page, _flow = start_authorize(c)
    login = new_login()
    callback = sso_to_callback(c, page, "good", login)
    assert query_of(callback)["iss"] == sso.idp.issuer  # RFC 9207: oidc-provider sends it
    tokens_before = sso.idp.stats()["token"]
    assert UNVERIFIABLE in refused_page(sso, c, with_query(callback, iss="https://evil.example"))
    assert sso.idp.stats()["token"] == tokens_before
    # Nor may it be left out: the provider's metadata says it always sends one.
    page2, _ = start_authorize(c)
    callback2 = sso_to_callback(c, page2, "good", login)
    assert UNVERIFIABLE in refused_page(sso, c, with_query(callback2, iss=None))
    assert sso.idp.stats()["token"] == tokens_before
    assert sso.identities("good", login) == []


def test_answer_at_another_providers_callback_is_refused(sso: SsoServer) -> None:
    c = sso.client()
    page, _flow = start_authorize(c)
    callback = sso_to_callback(c, page, "good", new_login())
    moved = callback.replace("/callback/good?", "/callback/other?")
    r = c.get(moved)
    assert r.status_code == 400 and STALE in error_text(r.text)


def test_cancel_at_the_provider_is_a_clear_message_and_the_password_still_works(
    sso: SsoServer,
) -> None:
    email, password = new_email(), "correct horse battery"
    sso.server.create_user(email, password)
    c = sso.client()
    page, flow = start_authorize(c)
    callback = upstream_cancel(c, click_provider(c, page, "good"))
    assert query_of(callback)["error"] == "access_denied"
    r = c.get(callback)
    login_page = follow(c, r)
    assert "You did not sign in with Test IdP (good)" in error_text(login_page.text)
    answer = c.post(
        str(login_page.url),
        data={"csrf_token": csrf_of(login_page.text), "email": email, "password": password},
    )
    assert exchange(sso.server, callback_params(answer)["code"], flow).status_code == 200


def test_forged_state_and_unknown_provider_are_refused(sso: SsoServer) -> None:
    c = sso.client()
    assert c.get("/sso/oauth2/callback/good?code=x&state=nope").status_code == 400
    assert c.get("/sso/oauth2/callback/good?code=x").status_code == 400
    assert c.get("/sso/oauth2/callback/nosuch?code=x&state=a.b").status_code == 404
    # A real flow, the wrong secret: refused, and the pending request survives for the user.
    page, _flow = start_authorize(c)
    callback = sso_to_callback(c, page, "good", new_login())
    flow_id = query_of(callback)["state"].rpartition(".")[0]
    forged = with_query(callback, state=flow_id + ".forged")
    assert c.get(forged).status_code == 400
    assert c.get(callback).status_code == 303


# -- accounts: conflicts and linking -------------------------------------------------------------


def test_email_of_an_existing_account_is_refused_by_default_nothing_created_or_linked(
    sso: SsoServer,
) -> None:
    login = new_login()
    email = f"{login}@example.test"
    user_id = sso.server.create_user(email, "correct horse battery")
    c = sso.client()
    page, _flow = start_authorize(c)
    message = refused_page(sso, c, sso_to_callback(c, page, "good", login))
    assert "If you already have an account, sign in to it" in message
    assert sso.identities("good", login) == []
    assert [r[0] for r in sso.users_with_email(email)] == [user_id]


def test_unverified_email_of_an_existing_account_is_refused_even_with_login_and_link(
    sso: SsoServer,
) -> None:
    login = new_login()
    email = f"{login}@example.test"
    user_id = sso.server.create_user(email, "correct horse battery")
    c = sso.client()
    page, _flow = start_authorize(c)
    message = refused_page(sso, c, sso_to_callback(c, page, "unverified", login))
    assert "If you already have an account, sign in to it" in message
    assert sso.identities("unverified", login) == []
    assert [r[0] for r in sso.users_with_email(email)] == [user_id]


def test_login_and_link_links_only_after_the_accounts_own_sign_in(sso: SsoServer) -> None:
    login = new_login()
    email = f"{login}@example.test"
    password = "correct horse battery"
    user_id = sso.server.create_user(email, password)
    c = sso.client()
    page, flow = start_authorize(c)
    r = c.get(sso_to_callback(c, page, "linking", login))
    login_page = follow(c, r)
    assert "Sign in to it to link your Test IdP (linking) account" in login_page.text
    assert sso.identities("linking", login) == []  # not before the account's own sign-in
    # A wrong password links nothing.
    action = str(login_page.url)
    bad = c.post(
        action,
        data={
            "csrf_token": csrf_of(login_page.text),
            "email": email,
            "password": "wrong password!",
        },
    )
    assert bad.status_code == 401 and sso.identities("linking", login) == []
    # Another account's password does not do either: the email is fixed to this account.
    other = new_email()
    sso.server.create_user(other, password)
    wrong = c.post(
        action, data={"csrf_token": csrf_of(bad.text), "email": other, "password": password}
    )
    assert wrong.status_code == 400 and sso.identities("linking", login) == []
    ok = c.post(
        action, data={"csrf_token": csrf_of(wrong.text), "email": email, "password": password}
    )
    tokens = exchange(sso.server, callback_params(ok)["code"], flow).json()
    assert claims_of(tokens["id_token"])["sub"] == user_id
    assert sso.identities("linking", login) == [(user_id, email, True)]
    # From now on the provider alone signs in to that account.
    _c, cb, flow2 = sign_in_app(sso, "linking", login)
    assert claims_of(exchange(sso.server, cb["code"], flow2).json()["id_token"])["sub"] == user_id
    audit = sso.query("SELECT action FROM audit_log WHERE target_id = ?", user_id)
    assert ("identity.link",) in audit


# -- GitHub (plain OAuth 2.0) ------------------------------------------------------------------


def _github_sign_in(sso: SsoServer, user: GithubUser) -> tuple[Any, Any, Any]:
    c = sso.client()
    page, flow = start_authorize(c)
    sso.github.next_user = user
    r = click_provider(c, page, "github")
    assert r.headers["location"].startswith(sso.github.url + "/login/oauth/authorize?")
    q = query_of(r.headers["location"])
    assert q["scope"] == "read:user user:email" and q["code_challenge_method"] == "S256"
    callback = c.get(r.headers["location"]).headers["location"]
    return c, c.get(callback), flow


def test_github_verified_primary_email_creates_a_user_with_the_numeric_id_as_subject(
    sso: SsoServer,
) -> None:
    uid = secrets.randbelow(10**9) + 1
    login = new_login()
    emails = [
        {"email": f"{login}-other@example.test", "primary": False, "verified": True},
        {"email": f"{login}@example.test", "primary": True, "verified": True},
    ]
    _c, answer, flow = _github_sign_in(sso, GithubUser(uid, login, emails, "Octo Cat"))
    tokens = exchange(sso.server, callback_params(answer)["code"], flow).json()
    sub = claims_of(tokens["id_token"])["sub"]
    assert sso.identities("github", str(uid)) == [(sub, f"{login}@example.test", True)]
    assert sso.users_with_email(f"{login}@example.test") == [(sub, True, True)]


def test_github_without_an_email_is_refused_and_creates_nothing(sso: SsoServer) -> None:
    uid = secrets.randbelow(10**9) + 1
    c, answer, _flow = _github_sign_in(sso, GithubUser(uid, new_login(), []))
    assert "GitHub did not share an email address" in error_text(follow(c, answer).text)
    assert sso.identities("github", str(uid)) == []


def test_github_unverified_primary_email_of_an_account_is_not_linked(sso: SsoServer) -> None:
    uid = secrets.randbelow(10**9) + 1
    login = new_login()
    email = f"{login}@example.test"
    user_id = sso.server.create_user(email, "correct horse battery")
    emails = [{"email": email, "primary": True, "verified": False}]
    c, answer, _flow = _github_sign_in(sso, GithubUser(uid, login, emails))
    assert "If you already have an account, sign in to it" in error_text(follow(c, answer).text)
    assert sso.identities("github", str(uid)) == []
    assert [r[0] for r in sso.users_with_email(email)] == [user_id]


def test_github_refuses_a_token_exchange_error(sso: SsoServer) -> None:
    """GitHub answers a bad code with HTTP 200 and an error object."""
    c = sso.client()
    page, _flow = start_authorize(c)
    sso.github.next_user = GithubUser(7, "x", [])
    r = click_provider(c, page, "github")
    callback = c.get(r.headers["location"]).headers["location"]
    assert UNVERIFIABLE in refused_page(sso, c, with_query(callback, code="not-a-code"))
    assert sso.identities("github", "7") == []


def test_alias_in_the_callback_url_is_the_registered_redirect_uri(sso: SsoServer) -> None:
    c = sso.client()
    page, _flow = start_authorize(c)
    r = click_provider(c, page, "good")
    q = query_of(r.headers["location"])
    assert q["redirect_uri"] == sso.url + "/sso/oauth2/callback/good"
    assert q["code_challenge_method"] == "S256" and len(q["nonce"]) >= 32
    assert q["scope"] == "openid email profile"
    assert urljoin(sso.idp.issuer, "/auth") in r.headers["location"]
