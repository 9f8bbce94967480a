"""The device authorization grant (RFC 8628) over HTTP against the real server, on SQLite and
PostgreSQL: the device authorization endpoint, the /device page and its approval step, the
token grant, and the attacks on each (brute force of user codes, floods of polls, another
client's device code, replays, CSRF, a GET that must approve nothing). Never a 500."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx2
import jwt
import pytest

from agtest import device
from agtest.device import USER_CODE_RE, approve_as, decide, enter_code, location, new_code, poll
from agtest.server import (
    DEVICE,
    DEVICE_GRANT,
    NATIVE,
    Browser,
    ServerProcess,
    new_email,
    refresh,
)

PASSWORD = "correct horse battery"


def user(server: ServerProcess) -> tuple[str, str]:
    email = new_email()
    return email, server.create_user(email, PASSWORD)


def row(server: ServerProcess, device_code: str) -> dict[str, Any]:
    digest = hashlib.sha256(device_code.encode()).hexdigest()
    cols = ("id", "status", "poll_interval", "user_id", "auth_time", "issued_grant_id", "amr")
    found = server.query(
        f"SELECT {', '.join(cols)} FROM device_codes WHERE device_code_hash = ?", digest
    )
    assert len(found) == 1
    return dict(zip(cols, found[0], strict=True))


def wait_interval() -> None:
    """The test server's interval is 1 s (agtest.server_config); whole seconds are compared."""
    time.sleep(1.1)


def claims(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return payload


# -- the device authorization endpoint -----------------------------------------------------------


def test_discovery_names_the_device_endpoint_and_grant(authgear_server: ServerProcess) -> None:
    doc = httpx2.get(authgear_server.url + "/.well-known/openid-configuration").json()
    assert (
        doc["device_authorization_endpoint"] == authgear_server.url + "/oauth2/device_authorization"
    )
    assert DEVICE_GRANT in doc["grant_types_supported"]


def test_device_authorization_answers_rfc_8628_and_stores_only_hashes(
    authgear_server: ServerProcess,
) -> None:
    r = device.authorize(authgear_server)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert USER_CODE_RE.match(body["user_code"]), body["user_code"]
    assert body["verification_uri"] == authgear_server.url + "/device"
    assert body["verification_uri_complete"] == (
        f"{authgear_server.url}/device?user_code={body['user_code']}"
    )
    assert body["expires_in"] == 600 and body["interval"] == 1
    assert len(body["device_code"]) >= 43
    # Neither code is stored as it is: the device code as SHA-256, the user code keyed.
    dump = json.dumps(authgear_server.query("SELECT * FROM device_codes"), default=str)
    assert body["device_code"] not in dump
    plain = body["user_code"].replace("-", "")
    assert plain not in dump and body["user_code"] not in dump
    assert hashlib.sha256(plain.encode()).hexdigest() not in dump


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({"client_id": NATIVE, "scope": "openid"}, 400, "unauthorized_client"),
        ({"client_id": "nobody", "scope": "openid"}, 400, "invalid_client"),
        ({"scope": "openid"}, 400, "invalid_request"),
        ({"client_id": DEVICE, "scope": "offline_access"}, 400, "invalid_scope"),
        ({"client_id": DEVICE}, 400, "invalid_scope"),
        ({"client_id": DEVICE, "scope": "openid admin"}, 400, "invalid_scope"),
    ],
)
def test_device_authorization_refuses_clients_without_the_grant_and_bad_scopes(
    authgear_server: ServerProcess, data: dict[str, str], status: int, error: str | None
) -> None:
    r = httpx2.post(authgear_server.url + "/oauth2/device_authorization", data=data)
    assert r.status_code == status, r.text
    assert r.json().get("error") == error


def test_device_authorization_odd_requests_are_oauth_errors_never_500(
    authgear_server: ServerProcess,
) -> None:
    url = authgear_server.url + "/oauth2/device_authorization"
    cases = [
        httpx2.post(
            url,
            content=b"client_id=test-device&scope=openid&scope=openid",
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
        httpx2.post(url, json={"client_id": DEVICE, "scope": "openid"}),
        httpx2.post(
            url, content=b"\xff\xfe", headers={"content-type": "application/x-www-form-urlencoded"}
        ),
        httpx2.post(url, data={"client_id": DEVICE, "scope": "openid " * 1000}),
        httpx2.post(url, data={"client_id": DEVICE, "scope": "openid\x00"}),
        httpx2.get(url),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert all(r.json()["error"] == "invalid_request" for r in cases[:4])


# -- approving on /device and polling -------------------------------------------------------------


def test_device_approved_on_the_page_gets_tokens_once_with_the_browser_sign_in(
    authgear_server: ServerProcess,
) -> None:
    email, user_id = user(authgear_server)
    code = new_code(authgear_server)
    pending = poll(authgear_server, code["device_code"])
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    browser = Browser(authgear_server.url)
    done = approve_as(authgear_server, code["user_code"], email, PASSWORD, browser=browser)
    assert done.status_code == 200 and 'id="device-result"' in done.text
    assert "Device signed in" in done.text
    wait_interval()
    info = base64.urlsafe_b64encode(
        json.dumps({"ios": {"UIDevice": {"name": "Build box", "systemName": "iOS"}}}).encode()
    ).decode()
    r = poll(authgear_server, code["device_code"], x_device_info=info)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    id_claims = claims(tokens["id_token"])
    assert id_claims["sub"] == user_id and id_claims["aud"] == DEVICE
    assert "nonce" not in id_claims
    assert id_claims["amr"] == ["pwd", "x_primary_password"]
    # auth_time is the browser's sign-in, not the poll.
    (browser_auth,) = authgear_server.query(
        "SELECT authenticated_at FROM idp_sessions WHERE id = ?", id_claims["sid"]
    )
    assert id_claims["auth_time"] == browser_auth[0]
    assert claims(tokens["access_token"])["auth_time"] == browser_auth[0]
    me = httpx2.get(
        authgear_server.url + "/oauth2/userinfo",
        headers={"authorization": f"Bearer {tokens['access_token']}"},
    )
    assert me.status_code == 200 and me.json()["sub"] == user_id
    stored = row(authgear_server, code["device_code"])
    assert stored["status"] == "issued" and stored["user_id"] == user_id
    # issued once: the next poll is invalid_grant
    wait_interval()
    again = poll(authgear_server, code["device_code"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # the device's app session is listed like any, with its device name
    sessions = browser.http.get("/settings/sessions")
    assert "Device test app" in sessions.text and "Build box" in sessions.text
    (grant,) = authgear_server.query(
        "SELECT client_id, device_info FROM offline_grants WHERE id = ?",
        stored["issued_grant_id"],
    )
    assert grant[0] == DEVICE and "Build box" in str(grant[1])
    # and refreshes like any
    wait_interval()
    refreshed = httpx2.post(
        authgear_server.url + "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": DEVICE,
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert refreshed.status_code == 200, refreshed.text


def test_device_denied_on_the_page_gets_access_denied(authgear_server: ServerProcess) -> None:
    email, user_id = user(authgear_server)
    code = new_code(authgear_server)
    done = approve_as(authgear_server, code["user_code"], email, PASSWORD, decision="deny")
    assert done.status_code == 200 and "Sign-in denied" in done.text
    r = poll(authgear_server, code["device_code"])
    assert r.status_code == 400 and r.json()["error"] == "access_denied"
    assert row(authgear_server, code["device_code"])["status"] == "denied"
    grants = authgear_server.query("SELECT COUNT(*) FROM offline_grants WHERE user_id = ?", user_id)
    assert grants == [(0,)]
    # the code is used up: entering it again leads nowhere
    again = enter_code(Browser(authgear_server.url), code["user_code"])
    assert again.status_code == 400 and "not valid" in again.text


def test_a_signed_in_browser_approves_without_signing_in_again(
    authgear_server: ServerProcess,
) -> None:
    email, user_id = user(authgear_server)
    browser = Browser(authgear_server.url)
    r = browser.submit("/login?next=/", email, PASSWORD)
    assert location(r) == "/"
    code = new_code(authgear_server)
    entered = enter_code(browser, code["user_code"].lower().replace("-", " "))
    step = location(entered)
    assert urlsplit(step).path == "/flow/approve_device"
    page = browser.http.get(step)
    # which app, which scopes, when and from where, and the anti-phishing hint
    for shown in ("Device test app", email, "Stay signed in", "127.0.0.1", "Only approve"):
        assert shown in page.text, shown
    done = decide(browser, step)
    assert "Device signed in" in done.text
    (session_id,) = authgear_server.query("SELECT id FROM idp_sessions WHERE user_id = ?", user_id)[
        0
    ]
    stored = row(authgear_server, code["device_code"])
    assert stored["status"] == "approved" and stored["user_id"] == user_id
    assert authgear_server.query(
        "SELECT idp_session_id FROM device_codes WHERE id = ?", stored["id"]
    ) == [(session_id,)]


def test_signing_out_between_code_and_approval_approves_nothing(
    authgear_server: ServerProcess,
) -> None:
    email, _ = user(authgear_server)
    browser = Browser(authgear_server.url)
    browser.submit("/login?next=/", email, PASSWORD)
    code = new_code(authgear_server)
    step = location(enter_code(browser, code["user_code"]))
    page = browser.http.get(step)
    browser.http.cookies.delete("session")  # the user signed out in another tab
    r = browser.http.post(
        step, data={"csrf_token": device.csrf_of(page.text), "decision": "approve"}
    )
    assert r.status_code in (400, 403)
    assert row(authgear_server, code["device_code"])["status"] == "pending"


def test_two_browsers_with_one_code_decide_it_once(authgear_server: ServerProcess) -> None:
    email, _ = user(authgear_server)
    other_email, _ = user(authgear_server)
    code = new_code(authgear_server)
    posts = []
    for who in (email, other_email):
        b = Browser(authgear_server.url)
        step = location(b.submit(location(enter_code(b, code["user_code"])), who, PASSWORD))
        page = b.http.get(step)
        assert "Approve" in page.text
        posts.append((b, step, {"csrf_token": device.csrf_of(page.text), "decision": "approve"}))
    # both press Approve at the same time: one decides the code, the other is told it is gone
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda p: p[0].http.post(p[1], data=p[2]), posts))
    won = [r for r in answers if "Device signed in" in r.text]
    assert len(won) == 1, [(r.status_code, r.text[-300:]) for r in answers]
    lost = next(r for r in answers if r is not won[0])
    assert lost.status_code in (400, 409) and "expired or was already used" in lost.text
    assert row(authgear_server, code["device_code"])["status"] == "approved"
    # the loser's page shows no buttons any more
    loser_browser, loser_step, _ = posts[answers.index(lost)]
    assert 'value="approve"' not in loser_browser.http.get(loser_step).text


# -- polling: pending, slow_down, expired, another client ------------------------------------------


def test_a_flood_of_polls_gets_slow_down_never_a_500_and_the_interval_grows(
    authgear_server: ServerProcess,
) -> None:
    code = new_code(authgear_server)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: poll(authgear_server, code["device_code"]), range(40)))
    assert all(r.status_code == 400 for r in answers), [r.status_code for r in answers]
    errors = [r.json()["error"] for r in answers]
    assert set(errors) <= {"authorization_pending", "slow_down"}
    assert errors.count("slow_down") >= 30  # polls in the same second: at most one per second
    # 5 s more for each slow_down (RFC 8628 §3.5), up to 60
    assert row(authgear_server, code["device_code"])["poll_interval"] == 60
    wait_interval()
    assert poll(authgear_server, code["device_code"]).json()["error"] == "slow_down"


def test_polling_at_the_interval_is_never_slow_down(authgear_server: ServerProcess) -> None:
    code = new_code(authgear_server)
    for _ in range(3):
        assert poll(authgear_server, code["device_code"]).json()["error"] == "authorization_pending"
        wait_interval()
    assert row(authgear_server, code["device_code"])["poll_interval"] == 1


def test_an_expired_code_is_expired_token_and_cannot_be_entered(
    authgear_server: ServerProcess,
) -> None:
    code = new_code(authgear_server)
    stored = row(authgear_server, code["device_code"])
    authgear_server.query(
        "UPDATE device_codes SET expires_at = ? WHERE id = ?", int(time.time()) - 1, stored["id"]
    )
    r = poll(authgear_server, code["device_code"])
    assert r.status_code == 400 and r.json()["error"] == "expired_token"
    entered = enter_code(Browser(authgear_server.url), code["user_code"])
    assert entered.status_code == 400 and "not valid" in entered.text


def test_a_code_approved_for_one_client_cannot_be_redeemed_by_another(
    authgear_server: ServerProcess,
) -> None:
    email, _ = user(authgear_server)
    code = new_code(authgear_server)
    approve_as(authgear_server, code["user_code"], email, PASSWORD)
    # Another client (NATIVE has not even the grant; CONFIDENTIAL-like others neither): the
    # grant check or the client binding refuses, and the owner's poll still works.
    foreign = poll(authgear_server, code["device_code"], client_id=NATIVE)
    assert foreign.status_code == 400 and foreign.json()["error"] == "unauthorized_client"
    unknown = poll(authgear_server, code["device_code"], client_id="test-nobody")
    assert unknown.json()["error"] == "invalid_client"
    assert row(authgear_server, code["device_code"])["status"] == "approved"
    r = poll(authgear_server, code["device_code"])
    assert r.status_code == 200, r.text


def test_another_device_client_polling_a_stolen_device_code_gets_invalid_grant(
    fresh_server: ServerProcess,
) -> None:
    other = {
        "id": "other-device",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token", DEVICE_GRANT],
    }
    fresh_server.config["clients"].append(other)
    fresh_server.start()
    email, _ = user(fresh_server)
    code = new_code(fresh_server)
    approve_as(fresh_server, code["user_code"], email, PASSWORD)
    stolen = poll(fresh_server, code["device_code"], client_id="other-device")
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    # the foreign poll touched nothing: no slow_down for the owner's next poll
    r = poll(fresh_server, code["device_code"])
    assert r.status_code == 200, r.text
    assert claims(r.json()["id_token"])["aud"] == DEVICE


def test_concurrent_polls_after_approval_issue_exactly_one_set_of_tokens(
    authgear_server: ServerProcess,
) -> None:
    email, user_id = user(authgear_server)
    code = new_code(authgear_server)
    approve_as(authgear_server, code["user_code"], email, PASSWORD)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: poll(authgear_server, code["device_code"]), range(12)))
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) == 1, [(r.status_code, r.text) for r in answers]
    others = {r.json()["error"] for r in answers if r.status_code != 200}
    assert others <= {"slow_down", "invalid_grant"}
    grants = authgear_server.query(
        "SELECT COUNT(*) FROM offline_grants WHERE user_id = ? AND client_id = ?", user_id, DEVICE
    )
    assert grants == [(1,)]


def test_without_offline_access_the_tokens_belong_to_the_browser_session(
    authgear_server: ServerProcess,
) -> None:
    email, _ = user(authgear_server)
    code = new_code(authgear_server, scope="openid")
    browser = Browser(authgear_server.url)
    approve_as(authgear_server, code["user_code"], email, PASSWORD, browser=browser)
    tokens = poll(authgear_server, code["device_code"]).json()
    assert "refresh_token" not in tokens and tokens["scope"] == "openid"
    bearer = {"authorization": f"Bearer {tokens['access_token']}"}
    assert httpx2.get(authgear_server.url + "/oauth2/userinfo", headers=bearer).status_code == 200
    # signing out that browser ends them, like any token of a browser session
    home = browser.http.get("/")
    out = browser.http.post("/logout", data={"csrf_token": device.csrf_of(home.text)})
    assert out.status_code in (302, 303)
    assert httpx2.get(authgear_server.url + "/oauth2/userinfo", headers=bearer).status_code == 401


@pytest.mark.parametrize(
    "device_code",
    ["", "x", "A" * 201, "A" * 4096, "é" * 50, "\x00", "%00", "a.b.c", "' OR 1=1 --"],
)
def test_odd_device_codes_are_oauth_errors_never_500(
    authgear_server: ServerProcess, device_code: str
) -> None:
    r = poll(authgear_server, device_code)
    assert r.status_code == 400, r.text
    assert r.json()["error"] in ("invalid_request", "invalid_grant")


# -- the /device page: GET approves nothing, CSRF, odd input ---------------------------------------


def test_a_get_with_user_code_only_fills_the_form_and_approves_nothing(
    authgear_server: ServerProcess,
) -> None:
    email, _ = user(authgear_server)
    browser = Browser(authgear_server.url)
    browser.submit("/login?next=/", email, PASSWORD)
    code = new_code(authgear_server)
    flows_before = authgear_server.query("SELECT COUNT(*) FROM auth_flows")
    page = browser.http.get(code["verification_uri_complete"])
    assert page.status_code == 200
    assert f'value="{code["user_code"]}"' in page.text and 'method="post"' in page.text
    assert "Only continue if you started" in page.text
    # a GET of the approval step's URL shape, or with every parameter, approves nothing either
    browser.http.get("/device", params={"user_code": code["user_code"], "decision": "approve"})
    assert row(authgear_server, code["device_code"])["status"] == "pending"
    assert authgear_server.query("SELECT COUNT(*) FROM auth_flows") == flows_before
    assert poll(authgear_server, code["device_code"]).json()["error"] == "authorization_pending"


def test_code_entry_and_approval_need_the_csrf_token_and_our_origin(
    authgear_server: ServerProcess,
) -> None:
    email, _ = user(authgear_server)
    code = new_code(authgear_server)
    browser = Browser(authgear_server.url)
    browser.http.get("/device")
    no_token = browser.http.post("/device", data={"user_code": code["user_code"]})
    assert no_token.status_code == 403
    page = browser.http.get("/device")
    cross_site = browser.http.post(
        "/device",
        data={"csrf_token": device.csrf_of(page.text), "user_code": code["user_code"]},
        headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"},
    )
    assert cross_site.status_code == 403
    step = location(
        browser.submit(location(enter_code(browser, code["user_code"])), email, PASSWORD)
    )
    page = browser.http.get(step)
    forged = browser.http.post(step, data={"decision": "approve"})
    assert forged.status_code == 403
    # a token from another browser (the attacker's own) is worthless here
    attacker = Browser(authgear_server.url)
    their_page = attacker.http.get("/device")
    foreign = browser.http.post(
        step, data={"decision": "approve", "csrf_token": device.csrf_of(their_page.text)}
    )
    assert foreign.status_code == 403
    from_elsewhere = browser.http.post(
        step,
        data={"decision": "approve", "csrf_token": device.csrf_of(page.text)},
        headers={"origin": "https://evil.example"},
    )
    assert from_elsewhere.status_code == 403
    assert row(authgear_server, code["device_code"])["status"] == "pending"
    # the approval flow is bound to the browser that entered the code
    stranger = attacker.http.get(step)
    assert stranger.status_code == 400
    assert decide(browser, step).status_code == 200


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "BCDF",
        "\uff22\uff23\uff24\uff26-\uff27\uff28\uff2a\uff2b",
        "bcdf-ghjß",
        "<script>alert(1)</script>",
        "A" * 5000,
        "\x00",
    ],
)
def test_odd_typed_codes_are_a_page_error_never_500(
    authgear_server: ServerProcess, typed: str
) -> None:
    r = enter_code(Browser(authgear_server.url), typed)
    assert r.status_code == 400, r.status_code
    assert "<script>alert" not in r.text


def test_an_unknown_client_approval_flow_expires_when_the_client_loses_the_grant(
    fresh_server: ServerProcess,
) -> None:
    fresh_server.start()
    email, _ = user(fresh_server)
    code = new_code(fresh_server)
    browser = Browser(fresh_server.url)
    step = location(
        browser.submit(location(enter_code(browser, code["user_code"])), email, PASSWORD)
    )
    fresh_server.stop()
    for c in fresh_server.config["clients"]:
        if c["id"] == DEVICE:
            c["grant_types"] = ["authorization_code", "refresh_token"]
    fresh_server.start()
    assert browser.http.get(step).status_code == 400
    r = poll(fresh_server, code["device_code"])
    assert r.json()["error"] == "unauthorized_client"


# -- brute force of user codes --------------------------------------------------------------------


def limited(server: ServerProcess, **limits: int) -> None:
    server.config["rate_limits"] = {"enabled": True, **limits}
    server.start()


def test_user_code_brute_force_from_one_address_is_refused_even_the_right_code(
    fresh_server: ServerProcess,
) -> None:
    fresh_server.config["trusted_proxies"] = ["127.0.0.1/32"]
    limited(fresh_server, device_code_failures_per_ip_per_hour=5)
    email, _ = user(fresh_server)
    code = new_code(fresh_server)
    browser = Browser(fresh_server.url)
    browser.http.headers["x-forwarded-for"] = "203.0.113.9"
    page = browser.http.get("/device")
    token = device.csrf_of(page.text)
    tails = ("".join(t) for t in itertools.product("GHJK", repeat=4))
    guesses = [g for g in (f"BCDF-{t}" for t in tails) if g != code["user_code"]][:20]

    def guess(g: str) -> int:
        return browser.http.post("/device", data={"csrf_token": token, "user_code": g}).status_code

    # counted before each check, atomically: of 20 concurrent wrong guesses at most 5 are checked
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(guess, guesses))
    assert statuses.count(400) == 5 and statuses.count(429) == 15, statuses
    right = browser.http.post("/device", data={"csrf_token": token, "user_code": code["user_code"]})
    assert right.status_code == 429 and "Too many wrong codes" in right.text
    # another network still can
    other = Browser(fresh_server.url)
    other.http.headers["x-forwarded-for"] = "198.51.100.7"
    assert (
        approve_as(fresh_server, code["user_code"], email, PASSWORD, browser=other).status_code
        == 200
    )


def test_right_codes_are_given_back_so_an_office_behind_one_address_is_not_locked(
    fresh_server: ServerProcess,
) -> None:
    limited(fresh_server, device_code_failures_per_ip_per_hour=2)
    for _ in range(4):
        code = new_code(fresh_server)
        r = enter_code(Browser(fresh_server.url), code["user_code"])
        assert r.status_code == 303, r.text
    assert enter_code(Browser(fresh_server.url), "BCDF-BCDF").status_code == 400


def test_a_distributed_guess_of_one_device_code_kills_that_code(
    fresh_server: ServerProcess,
) -> None:
    """Guesses from many addresses (X-Forwarded-For through a trusted proxy) each pass the
    per-address limit; past max_failed_entries wrong entries during its life, the code is
    dead: even its right user code no longer leads to an approval."""
    fresh_server.config["trusted_proxies"] = ["127.0.0.1/32"]
    fresh_server.config["device_authorization"] = {"interval": 1, "max_failed_entries": 3}
    limited(fresh_server, device_code_failures_per_ip_per_hour=100)
    email, _ = user(fresh_server)
    victim = new_code(fresh_server)
    for i in range(4):
        b = Browser(fresh_server.url)
        b.http.headers["x-forwarded-for"] = f"198.51.100.{i + 1}"
        assert enter_code(b, "BCDF-BCDF").status_code == 400
    r = enter_code(Browser(fresh_server.url), victim["user_code"])
    assert r.status_code == 400 and "not valid" in r.text
    assert poll(fresh_server, victim["device_code"]).json()["error"] == "authorization_pending"
    # a code made after those guesses is not affected
    later = new_code(fresh_server)
    assert approve_as(fresh_server, later["user_code"], email, PASSWORD).status_code == 200


def test_device_authorization_requests_are_rate_limited_per_address(
    fresh_server: ServerProcess,
) -> None:
    limited(fresh_server, device_authorizations_per_ip_per_minute=3)
    answers = [device.authorize(fresh_server).status_code for _ in range(5)]
    assert answers == [200, 200, 200, 429, 429]


# -- a device's session is an app session like any: listed, and revocable, in the portal and
# -- on /settings/sessions (issue 14.1) -----------------------------------------------------------


def device_info(name: str) -> str:
    """x_device_info as Authgear's SDKs send it: base64url of JSON naming the device."""
    info = {"ios": {"UIDevice": {"name": name, "systemName": "iOS"}}}
    return base64.urlsafe_b64encode(json.dumps(info).encode()).decode()


def device_tokens(
    server: ServerProcess, email: str, browser: Browser, name: str
) -> tuple[dict[str, Any], str]:
    """A device approved by ``browser``'s user: its tokens and its grant's id, after one refresh
    that works (so a later invalid_grant is the revocation's doing)."""
    code = new_code(server)
    assert (
        approve_as(server, code["user_code"], email, PASSWORD, browser=browser).status_code == 200
    )
    r = poll(server, code["device_code"], x_device_info=device_info(name))
    assert r.status_code == 200, r.text
    grant_id = row(server, code["device_code"])["issued_grant_id"]
    assert grant_id
    refreshed = refresh(server, r.json()["refresh_token"], client_id=DEVICE)
    assert refreshed.status_code == 200, refreshed.text
    return refreshed.json(), grant_id


def test_a_device_session_is_in_the_portal_and_revoking_it_there_ends_its_refresh(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    admin_email = new_email()
    server.create_user(admin_email, PASSWORD, "--role", "admin")
    email, user_id = user(server)
    tokens, grant_id = device_tokens(server, email, Browser(server.url), "Kiosk in hall B")
    admin = Browser(server.url)
    assert admin.submit("/login?next=/portal", admin_email, PASSWORD).status_code == 303
    page = admin.http.get(f"/portal/users/{user_id}")
    assert page.status_code == 200
    confirm_url = f"/portal/users/{user_id}/sessions/{grant_id}/revoke"
    assert f'href="{confirm_url}"' in page.text
    row_html = page.text.split(f'href="{confirm_url}"')[0].rsplit("<tr>", 1)[-1]
    for shown in ("Kiosk in hall B", "App session", "Device test app"):
        assert shown in row_html, shown
    confirm = admin.http.get(confirm_url)
    assert confirm.status_code == 200 and "Revoke this session?" in confirm.text
    r = admin.http.post(confirm_url, data={"csrf_token": device.csrf_of(confirm.text)})
    assert r.status_code == 303 and r.headers["location"] == f"/portal/users/{user_id}?done=revoked"
    again = refresh(server, tokens["refresh_token"], client_id=DEVICE)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    bearer = {"authorization": f"Bearer {tokens['access_token']}"}
    assert httpx2.get(server.url + "/oauth2/userinfo", headers=bearer).status_code == 401
    assert "Kiosk in hall B" not in admin.http.get(f"/portal/users/{user_id}").text


def test_a_device_session_is_in_settings_sessions_and_signing_it_out_there_ends_its_refresh(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email, _ = user(server)
    browser = Browser(server.url)
    assert browser.submit("/login?next=/", email, PASSWORD).status_code == 303
    tokens, grant_id = device_tokens(server, email, browser, "Build box")
    page = browser.http.get("/settings/sessions")
    assert page.status_code == 200
    action = f'action="/settings/sessions/{grant_id}/revoke"'
    assert action in page.text
    item = page.text.split(action)[0].rsplit("<li>", 1)[-1]
    for shown in ("Build box", "App session", "Device test app"):
        assert shown in item, shown
    r = browser.http.post(
        f"/settings/sessions/{grant_id}/revoke", data={"csrf_token": device.csrf_of(page.text)}
    )
    assert r.status_code == 303 and r.headers["location"] == "/settings/sessions?done=signed-out"
    again = refresh(server, tokens["refresh_token"], client_id=DEVICE)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # only the device was signed out: this browser is still in, and the device is gone from it
    after = browser.http.get("/settings/sessions")
    assert after.status_code == 200 and "This browser" in after.text
    assert action not in after.text and "Build box" not in after.text
