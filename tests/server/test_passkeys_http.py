"""Passkeys over real HTTP (SQLite and PostgreSQL) with a software authenticator making real
ES256 signatures: registration from the settings, sign-in without a password, and the attacks
(a foreign credential, another user's credential, a tampered or replayed assertion, a cloned
authenticator's stale counter, another origin or RP ID, no user verification) refused with
nothing changed."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from agtest.mfa import (
    claims,
    csrf_of,
    enrol_totp,
    finish_login,
    location,
    options,
    register_passkey,
    signed_in_browser,
)
from agtest.server import Browser, Flow, ServerProcess, free_port, new_email, server_config
from agtest.softauthn import SoftAuthenticator, b64url

PASSWORD = "correct horse battery"
PASSKEY_AMR = ["x_passkey", "x_primary_passkey"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Passkeys need a host name as RP ID: the public origin is http://localhost:<port>."""
    port = free_port()
    config = server_config(port, public_origin=f"http://localhost:{port}")
    if request.param == "postgresql":
        config["database_url"] = request.getfixturevalue("postgres").create_database(
            f"ag_{secrets.token_hex(6)}"
        )
    process = ServerProcess(tmp_path_factory.mktemp("passkeys"), port, config)
    process.start()
    yield process
    process.stop()


def origin(server: ServerProcess) -> str:
    return f"http://localhost:{server.port}"


def user_with_passkey(server: ServerProcess) -> tuple[str, str, SoftAuthenticator]:
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    browser = signed_in_browser(server, email, PASSWORD)
    soft = SoftAuthenticator(origin(server))
    assert location(register_passkey(browser, soft)) == "/settings/security?done=add_passkey"
    browser.close()
    return email, user_id, soft


def passkey_login(
    server: ServerProcess, soft: SoftAuthenticator, **get_kwargs: Any
) -> tuple[httpx2.Response, Flow, Browser, dict[str, Any]]:
    """authorize → /login → "Sign in with a passkey" (options, then the assertion)."""
    flow = Flow.new()
    browser = Browser(server.url)
    page_url = location(browser.authorize(**flow.params()))
    page = browser.http.get(page_url)
    assert 'autocomplete="username webauthn"' in page.text
    opts_url = re.search(r'data-options="([^"]+)"', page.text)
    assert opts_url
    opts = options(browser, opts_url.group(1).replace("&amp;", "&"), csrf_of(page))
    assert "allowCredentials" not in opts["publicKey"] or not opts["publicKey"]["allowCredentials"]
    assertion = soft.get(opts["publicKey"], **get_kwargs)
    r = browser.http.post(
        opts["action"], data={"csrf_token": opts["csrf_token"], "credential": json.dumps(assertion)}
    )
    return r, flow, browser, {"options": opts, "assertion": assertion}


def passkey_row(server: ServerProcess, user_id: str) -> tuple[Any, ...]:
    rows = server.query(
        "SELECT counter, last_used_at, label FROM authenticators WHERE user_id = ? "
        "AND kind = 'passkey'",
        user_id,
    )
    assert len(rows) == 1
    return rows[0]


def test_register_then_sign_in_with_a_passkey_alone(server: ServerProcess) -> None:
    _email, user_id, soft = user_with_passkey(server)
    assert passkey_row(server, user_id)[2] == "Test key"
    r, flow, browser, _ = passkey_login(server, soft)
    tokens = finish_login(server, r, flow)
    id_claims = claims(tokens["id_token"])
    assert id_claims["amr"] == PASSKEY_AMR and id_claims["sub"] == user_id
    assert id_claims["https://authgear.com/claims/user/can_reauthenticate"] is True
    assert passkey_row(server, user_id)[0] == 1  # the sign count moved
    browser.close()


def test_options_exclude_the_users_passkeys_and_require_user_verification(
    server: ServerProcess,
) -> None:
    email, _, soft = user_with_passkey(server)
    browser = signed_in_browser(server, email, PASSWORD)
    page = browser.http.get("/settings/security")
    started = browser.http.post(
        "/settings/security/passkeys/add", data={"csrf_token": csrf_of(page)}
    )
    step = browser.http.get(location(started))
    opts = options(browser, location(started).replace("?", "/options?"), csrf_of(step))
    pk = opts["publicKey"]
    assert [c["id"] for c in pk["excludeCredentials"]] == [b64url(soft.credential_id)]
    assert pk["rp"]["id"] == "localhost"
    assert pk["authenticatorSelection"]["userVerification"] == "required"
    assert pk["authenticatorSelection"]["residentKey"] == "required"
    # The same authenticator registered again is refused, and nothing is added.
    again = browser.http.post(
        opts["action"],
        data={"csrf_token": opts["csrf_token"], "credential": json.dumps(soft.create(pk))},
    )
    assert again.status_code == 409
    browser.close()


def test_passkey_sign_in_needs_no_second_factor_even_with_totp(server: ServerProcess) -> None:
    email, _user_id, soft = user_with_passkey(server)
    browser = signed_in_browser(server, email, PASSWORD)
    enrol_totp(browser)
    browser.close()
    r, flow, b2, _ = passkey_login(server, soft)
    assert claims(finish_login(server, r, flow)["id_token"])["amr"] == PASSKEY_AMR
    b2.close()


@pytest.mark.parametrize(
    ("attack", "kwargs"),
    [
        ("another origin", {"origin": "http://evil.localhost"}),
        ("another RP ID", {"rp_id": "evil.example"}),
        ("no user verification", {"uv": False}),
        ("a tampered client data", {"tamper": True}),
        ("another user's handle", {"user_handle": b"someone-else"}),
    ],
)
def test_hostile_assertion_is_refused_and_changes_nothing(
    server: ServerProcess, attack: str, kwargs: dict[str, Any]
) -> None:
    _, user_id, soft = user_with_passkey(server)
    before = passkey_row(server, user_id)
    r, _, browser, _ = passkey_login(server, soft, **kwargs)
    assert r.status_code in (400, 401), attack
    assert "session" not in browser.http.cookies
    assert passkey_row(server, user_id) == before, attack
    browser.close()


def test_foreign_credential_id_is_refused(server: ServerProcess) -> None:
    _, _, soft = user_with_passkey(server)
    stranger = SoftAuthenticator(origin(server), user_handle=soft.user_handle)
    r, _, browser, _ = passkey_login(server, stranger)
    assert r.status_code == 401 and "session" not in browser.http.cookies
    browser.close()


def test_cloned_authenticator_with_a_stale_counter_is_refused(server: ServerProcess) -> None:
    _, user_id, soft = user_with_passkey(server)
    r, flow, browser, _ = passkey_login(server, soft, count_step=5)
    finish_login(server, r, flow)
    assert passkey_row(server, user_id)[0] == 5
    # A clone that has signed fewer times than the original: its counter went backwards.
    soft.sign_count = 2
    clone, _, b2, _ = passkey_login(server, soft)
    assert clone.status_code == 401 and "session" not in b2.http.cookies
    assert passkey_row(server, user_id)[0] == 5
    browser.close()
    b2.close()


def test_replayed_assertion_and_challenge_are_refused(server: ServerProcess) -> None:
    _, user_id, soft = user_with_passkey(server)
    r, flow, browser, sent = passkey_login(server, soft)
    finish_login(server, r, flow)
    count = passkey_row(server, user_id)[0]
    # The same assertion to the same flow action (the flow is finished) and to a fresh flow
    # (its challenge is not the one signed).
    replay = browser.http.post(
        sent["options"]["action"],
        data={
            "csrf_token": sent["options"]["csrf_token"],
            "credential": json.dumps(sent["assertion"]),
        },
    )
    assert replay.status_code == 400
    again, _, b2, _ = passkey_login(server, soft)
    assert again.status_code == 303  # a genuine new assertion still works
    assert passkey_row(server, user_id)[0] == count + 1
    browser.close()
    b2.close()


def test_a_challenge_is_checked_once_even_when_the_check_fails(server: ServerProcess) -> None:
    _, _user_id, soft = user_with_passkey(server)
    r, _, browser, sent = passkey_login(server, soft, uv=False)
    assert r.status_code == 401
    # The same flow, now with a good assertion over the used challenge: refused (expired).
    good = soft.get(sent["options"]["publicKey"])
    second = browser.http.post(
        sent["options"]["action"],
        data={"csrf_token": sent["options"]["csrf_token"], "credential": json.dumps(good)},
    )
    assert second.status_code == 400 and "expired" in second.text
    assert "session" not in browser.http.cookies
    browser.close()


def test_remove_passkey_then_it_no_longer_signs_in(server: ServerProcess) -> None:
    email, user_id, soft = user_with_passkey(server)
    browser = signed_in_browser(server, email, PASSWORD)
    page = browser.http.get("/settings/security")
    pid = re.search(r'action="/settings/security/passkeys/([^/]+)/remove"', page.text)
    assert pid
    removed = browser.http.post(
        f"/settings/security/passkeys/{pid.group(1)}/remove", data={"csrf_token": csrf_of(page)}
    )
    assert location(removed) == "/settings/security?done=passkey-removed"
    r, _, b2, _ = passkey_login(server, soft)
    assert r.status_code == 401
    assert server.query("SELECT count(*) FROM authenticators WHERE user_id = ?", user_id) == [(0,)]
    browser.close()
    b2.close()


def test_passkey_only_user_can_reauthenticate_claim(server: ServerProcess) -> None:
    """can_reauthenticate counts passkeys (accounts spec §1.8)."""
    _, user_id, soft = user_with_passkey(server)
    server.query("UPDATE users SET password_hash = NULL WHERE id = ?", user_id)
    r, flow, browser, _ = passkey_login(server, soft)
    tokens = finish_login(server, r, flow)
    assert claims(tokens["id_token"])["https://authgear.com/claims/user/can_reauthenticate"]
    browser.close()
