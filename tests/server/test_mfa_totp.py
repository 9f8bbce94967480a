"""Second factors over real HTTP, on SQLite and PostgreSQL: TOTP enrolment and sign-in, replay
refusal, recovery codes, trusted browsers, the secondary_authentication_mode policy, and the
attacks on them (replays, floods, leaked flow ids, stale sessions)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyotp

from agtest.mfa import (
    answer_totp,
    authenticator_rows,
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
from agtest.server import Browser, Flow, ServerProcess, new_email

PASSWORD = "correct horse battery"
KEK_1 = "ZmFrZSBrZWsgZm9yIHRlc3RzLCAzMiBieXRlcyEhISE="  # 32 bytes in base64, for tests only
KEK_2 = "c2Vjb25kIGZha2Uga2VrIGZvciB0ZXN0cyAzMiBiISE="
MFA_AMR = ["mfa", "otp", "pwd", "x_primary_password", "x_secondary_totp"]


def user_with_totp(server: ServerProcess) -> tuple[str, str, str, list[str]]:
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    browser = signed_in_browser(server, email, PASSWORD)
    secret, codes = enrol_totp(browser)
    browser.close()
    return email, user_id, secret, codes


def test_totp_enrolment_then_sign_in_asks_for_the_code_and_tokens_carry_mfa_amr(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email, user_id, secret, codes = user_with_totp(server)
    assert len(codes) == 10 and all(re.fullmatch(r"[0-9A-Z]{5}-[0-9A-Z]{5}", c) for c in codes)
    # Authgear's parameters: a 20-byte secret in unpadded base32.
    assert len(secret) == 32 and "=" not in secret
    assert [r[0] for r in authenticator_rows(server, user_id)] == ["recovery_code"] * 10 + ["totp"]
    # Stored: the codes' hashes only.
    stored = {
        r[0] for r in server.query("SELECT secret FROM authenticators WHERE user_id = ?", user_id)
    }
    assert not {c.replace("-", "") for c in codes} & stored

    r, flow, browser = start_login(server, email, PASSWORD)
    assert step_of(r) == "totp"
    # The password alone gave no session.
    assert "session" not in browser.http.cookies
    done = answer_totp(browser, r, secret)
    tokens = finish_login(server, done, flow)
    id_claims = claims(tokens["id_token"])
    assert id_claims["amr"] == MFA_AMR
    assert claims(tokens["access_token"])["amr"] == MFA_AMR
    assert "acr" not in id_claims  # not asked for
    resolved = browser.http.get("/_resolver/resolve")
    assert resolved.headers["x-authgear-session-amr"] == " ".join(MFA_AMR)
    browser.close()


def test_enrolment_completes_only_with_a_valid_code(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    browser = signed_in_browser(server, email, PASSWORD)
    page = browser.http.get("/settings/security")
    r = browser.http.post("/settings/security/totp/add", data={"csrf_token": csrf_of(page)})
    enrol = browser.http.get(location(r))
    assert "<svg" in enrol.text and "otpauth://totp/" in enrol.text
    uri = re.search(r'href="(otpauth://[^"]+)"', enrol.text)
    assert uri
    parsed = urlsplit(uri.group(1).replace("&amp;", "&"))
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    assert query["issuer"] == server.url and query["algorithm"] == "SHA1"
    assert query["digits"] == "6" and query["period"] == "30"
    assert list(query) == sorted(query)  # Go's url.Values order, like Authgear
    wrong = browser.http.post(location(r), data={"csrf_token": csrf_of(enrol), "code": "000000"})
    assert wrong.status_code == 400 and "not right" in wrong.text
    assert authenticator_rows(server, user_id) == []
    # The secret on the page is the one in the QR code, and a code from it completes.
    settle_totp_step()
    ok = browser.http.post(
        location(r), data={"csrf_token": csrf_of(wrong), "code": code(query["secret"])}
    )
    assert step_of(ok) == "recovery_codes"
    assert [r[0] for r in authenticator_rows(server, user_id)][-1] == "totp"
    browser.close()


def test_replayed_totp_code_is_refused_and_signs_nobody_in(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email, _, secret, _ = user_with_totp(server)
    settle_totp_step()
    used = code(secret)
    first, flow1, b1 = start_login(server, email, PASSWORD)
    ok = post_page(b1, location(first), {"code": used})
    finish_login(server, ok, flow1)
    # The same code (same time step) in another sign-in, within its 90-second window.
    second, _, b2 = start_login(server, email, PASSWORD)
    replay = post_page(b2, location(second), {"code": used})
    assert replay.status_code == 401 and "used already" in replay.text
    assert "session" not in b2.http.cookies
    b1.close()
    b2.close()


def test_concurrent_submissions_of_one_code_sign_in_once(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email, _, secret, _ = user_with_totp(server)
    starts = [start_login(server, email, PASSWORD) for _ in range(6)]
    pages = [(b, location(r), csrf_of(b.http.get(location(r)))) for r, _, b in starts]
    settle_totp_step()
    one = code(secret)

    def submit(item: tuple[Browser, str, str]) -> int:
        browser, url, token = item
        return browser.http.post(url, data={"csrf_token": token, "code": one}).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(submit, pages))
    assert sorted(statuses) == [303] + [401] * 5
    for _, _, b in starts:
        b.close()


def test_recovery_code_signs_in_once_with_authgear_normalisation(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email, user_id, _, codes = user_with_totp(server)
    r, flow, browser = start_login(server, email, PASSWORD)
    totp_page = browser.http.get(location(r))
    link = re.search(r'href="(/flow/recovery_code\?flow=[^"]+)"', totp_page.text)
    assert link, totp_page.text
    # Lower case, spaces, I/L for 1 and O for 0 are read as Authgear reads them.
    typed = codes[0].lower().replace("-", " ").replace("1", "l").replace("0", "o")
    ok = post_page(browser, link.group(1), {"code": typed})
    tokens = finish_login(server, ok, flow)
    assert claims(tokens["id_token"])["amr"] == [
        "mfa",
        "pwd",
        "x_primary_password",
        "x_recovery_code",
    ]
    used = [r for r in authenticator_rows(server, user_id) if r[0] == "recovery_code" and r[2]]
    assert len(used) == 1
    again, _, b2 = start_login(server, email, PASSWORD)
    refused = post_page(
        b2, location(again).replace("/flow/totp", "/flow/recovery_code"), {"code": codes[0]}
    )
    assert refused.status_code == 401 and "used already" in refused.text
    malformed = post_page(
        b2, location(again).replace("/flow/totp", "/flow/recovery_code"), {"code": "not-a-code!"}
    )
    assert malformed.status_code == 400
    browser.close()
    b2.close()


def test_regenerated_recovery_codes_replace_the_old_ones(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email, _, secret, old = user_with_totp(server)
    browser = Browser(server.url)
    r = browser.submit("/login?next=/settings/security", email, PASSWORD)
    settle_totp_step()
    done = post_page(browser, location(r), {"code": code(secret, 1)})
    assert location(done) == "/settings/security"
    page = browser.http.get("/settings/security")
    assert "10 of 10 unused" in page.text
    shown = browser.http.post(
        "/settings/security/recovery-codes", data={"csrf_token": csrf_of(page)}
    )
    new = re.findall(r"<li><code>([0-9A-Z]{5}-[0-9A-Z]{5})</code></li>", shown.text)
    assert len(new) == 10 and not set(new) & set(old)
    # Shown once: the page afterwards has no codes.
    assert "<li><code>" not in browser.http.get("/settings/security").text
    attempt, _, b2 = start_login(server, email, PASSWORD)
    url = location(attempt).replace("/flow/totp", "/flow/recovery_code")
    assert post_page(b2, url, {"code": old[1]}).status_code == 401
    assert location(post_page(b2, url, {"code": new[1]})).startswith("http://127.0.0.1:5555/")
    browser.close()
    b2.close()


def test_trusted_browser_skips_the_code_with_x_device_token_and_no_mfa(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email, user_id, secret, _ = user_with_totp(server)
    r, flow, browser = start_login(server, email, PASSWORD)
    finish_login(server, answer_totp(browser, r, secret, trust_device="on"), flow)
    token = browser.http.cookies["mfa_device_token"]
    assert len(token) == 64
    # Only a hash is stored.
    stored = server.query("SELECT token_hash FROM mfa_device_tokens WHERE user_id = ?", user_id)
    assert len(stored) == 1 and stored[0][0] != token
    # A browser holding only that cookie (signed out) signs in with the password alone.
    again = Browser(server.url)
    again.http.cookies.set("mfa_device_token", token)
    flow2 = Flow.new()
    r2 = again.submit(location(again.authorize(**flow2.params())), email, PASSWORD)
    tokens = finish_login(server, r2, flow2)
    assert claims(tokens["id_token"])["amr"] == ["pwd", "x_device_token", "x_primary_password"]
    # A made-up token does not pass.
    forged = Browser(server.url)
    forged.http.cookies.set("mfa_device_token", "A" * 64)
    flow3 = Flow.new()
    r3 = forged.submit(location(forged.authorize(**flow3.params())), email, PASSWORD)
    assert step_of(r3) == "totp"
    for b in (browser, again, forged):
        b.close()


def test_flood_of_totp_guesses_locks_the_account_and_the_right_code_then_fails(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    server.config["lockout"] = {"max_attempts": 4, "minimum_duration": 600}
    server.start()
    email, _, secret, _ = user_with_totp(server)
    r, _, browser = start_login(server, email, PASSWORD)
    url = location(r)
    page = browser.http.get(url)
    token = csrf_of(page)
    wrong = [
        f"{n:06d}"
        for n in range(100000, 100020)
        if f"{n:06d}" not in {code(secret, d) for d in (-1, 0, 1)}
    ][:12]

    def guess(value: str) -> int:
        return browser.http.post(url, data={"csrf_token": token, "code": value}).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(guess, wrong))
    # At most max_attempts guesses were checked; the rest were refused unchecked.
    assert statuses.count(401) <= 4 and statuses.count(429) >= 8
    settle_totp_step()
    locked = browser.http.post(url, data={"csrf_token": token, "code": code(secret)})
    assert locked.status_code == 429
    assert "session" not in browser.http.cookies
    # The lock is the account's: the password is refused too (one counter, Authgear's model).
    again, _, b2 = start_login(server, email, PASSWORD)
    assert again.status_code == 429
    browser.close()
    b2.close()


def test_leaked_flow_id_is_useless_in_another_browser(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email, _, secret, _ = user_with_totp(server)
    r, flow, browser = start_login(server, email, PASSWORD)
    url = location(r)
    attacker = Browser(server.url)
    assert attacker.http.get(url).status_code == 400
    settle_totp_step()
    stolen = attacker.http.post(url, data={"code": code(secret)})
    assert stolen.status_code == 400 and "session" not in attacker.http.cookies
    # The rightful browser carries on.
    finish_login(server, answer_totp(browser, r, secret), flow)
    browser.close()
    attacker.close()


def test_required_mode_enrols_users_without_a_second_factor_on_their_next_sign_in(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    server.config["authentication"] = {"secondary_authentication_mode": "required"}
    server.start()
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    r, flow, browser = start_login(server, email, PASSWORD)
    assert step_of(r) == "enroll_totp"
    page = browser.http.get(location(r))
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page.text)
    assert secret
    settle_totp_step()
    codes_step = browser.http.post(
        location(r),
        data={"csrf_token": csrf_of(page), "code": code(secret.group(1).replace(" ", ""))},
    )
    assert step_of(codes_step) == "recovery_codes"
    shown = browser.http.get(location(codes_step))
    assert len(re.findall(r"<li><code>", shown.text)) == 10
    done = browser.http.post(location(codes_step), data={"csrf_token": csrf_of(shown)})
    tokens = finish_login(server, done, flow)
    assert claims(tokens["id_token"])["amr"] == MFA_AMR
    assert "totp" in [r[0] for r in authenticator_rows(server, user_id)]
    browser.close()


def test_disabled_mode_never_asks_for_a_second_factor(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["authentication"] = {"secondary_authentication_mode": "disabled"}
    server.start()
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    r, flow, browser = start_login(server, email, PASSWORD)
    tokens = finish_login(server, r, flow)
    assert claims(tokens["id_token"])["amr"] == ["pwd", "x_primary_password"]
    assert "authenticator app" not in browser.http.get("/settings/security").text
    home = browser.http.get("/")  # a form with this session's CSRF token
    refused = browser.http.post("/settings/security/totp/add", data={"csrf_token": csrf_of(home)})
    assert refused.status_code == 400
    assert authenticator_rows(server, user_id) == []
    browser.close()


def test_changing_factors_on_an_old_session_asks_to_confirm_first(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email, user_id, secret, _ = user_with_totp(server)
    r, flow, browser = start_login(server, email, PASSWORD)
    finish_login(server, answer_totp(browser, r, secret), flow)
    # The sign-in is an hour old: a stolen cookie must not be enough to remove the app.
    sid = browser.http.cookies["session"].split(".")[0]
    server.query(
        "UPDATE idp_sessions SET authenticated_at = ? WHERE id = ?", int(time.time()) - 3600, sid
    )
    page = browser.http.get("/settings/security")
    totp_id = re.search(r'action="/settings/security/totp/([^/]+)/remove"', page.text)
    assert totp_id
    asked = browser.http.post(
        f"/settings/security/totp/{totp_id.group(1)}/remove", data={"csrf_token": csrf_of(page)}
    )
    assert step_of(asked) == "reauth"
    assert "totp" in [r[0] for r in authenticator_rows(server, user_id)]
    confirmed = post_page(browser, location(asked), {"password": PASSWORD})
    assert step_of(confirmed) == "totp"
    settle_totp_step()
    back = post_page(browser, location(confirmed), {"code": code(secret, 1)})
    assert location(back) == "/settings/security?done=confirm"
    now = server.query("SELECT authenticated_at, amr FROM idp_sessions WHERE id = ?", sid)
    assert now[0][0] >= int(time.time()) - 60
    page = browser.http.get("/settings/security")
    removed = browser.http.post(
        f"/settings/security/totp/{totp_id.group(1)}/remove", data={"csrf_token": csrf_of(page)}
    )
    assert location(removed) == "/settings/security?done=totp-removed"
    # The last second factor gone: its recovery codes and trusted browsers go with it.
    assert authenticator_rows(server, user_id) == []
    actions = [
        r[0]
        for r in server.query(
            "SELECT action FROM audit_log WHERE target_id = ? ORDER BY id", user_id
        )
    ]
    assert actions == ["user.create", "totp.add", "totp.remove"]
    browser.close()


def test_totp_core_rules() -> None:
    from authgear.server.security import otp

    secret = otp.new_totp_secret()
    now = 1_700_000_015
    step = now // 30
    current = otp.totp_code(secret, step)
    assert current == pyotp.TOTP(secret).at(now)
    assert otp.totp_match(secret, current, now, None) == step
    assert otp.totp_match(secret, f" {current} ", now, None) == step
    assert otp.totp_match(secret, otp.totp_code(secret, step - 1), now, None) == step - 1
    assert otp.totp_match(secret, otp.totp_code(secret, step + 2), now, None) is None
    # Once a step is accepted, it and every earlier one are refused.
    assert otp.totp_match(secret, current, now, step) is None
    assert otp.totp_match(secret, otp.totp_code(secret, step - 1), now, step - 1) is None
    for bad in ("", "12345", "1234567", "12a456", "١٢٣٤٥٦"):
        assert otp.totp_match(secret, bad, now, None) is None
    assert otp.normalise_recovery_code("abcde-fghjk") == "ABCDEFGHJK"
    assert otp.normalise_recovery_code("o1ilO 23456") == "0111023456"
    assert otp.normalise_recovery_code("ABCDEFGHJKU") is None
    assert otp.normalise_recovery_code("ABCDE-FGHJU") is None  # U is not Crockford
    assert otp.device_token_hash("a" * 64) is None


def test_a_settings_flow_is_dead_once_its_user_signed_out_of_the_browser(
    authgear_server: ServerProcess,
) -> None:
    """Alice starts setting up an authenticator app and signs out; Bob signs in on the same
    browser and opens her page: it must not add an app to either account."""
    server = authgear_server
    alice, bob = new_email(), new_email()
    alice_id = server.create_user(alice, PASSWORD)
    bob_id = server.create_user(bob, PASSWORD)
    browser = signed_in_browser(server, alice, PASSWORD)
    page = browser.http.get("/settings/security")
    started = browser.http.post("/settings/security/totp/add", data={"csrf_token": csrf_of(page)})
    enrol_url = location(started)
    enrol = browser.http.get(enrol_url)
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', enrol.text)
    assert secret
    home = browser.http.get("/")
    browser.http.post("/logout", data={"csrf_token": csrf_of(home)})
    assert location(browser.submit("/login?next=/", bob, PASSWORD)) == "/"
    assert browser.http.get(enrol_url).status_code == 400
    settle_totp_step()
    late = browser.http.post(
        enrol_url,
        data={"csrf_token": csrf_of(home), "code": code(secret.group(1).replace(" ", ""))},
    )
    assert late.status_code == 400
    assert authenticator_rows(server, alice_id) == []
    assert authenticator_rows(server, bob_id) == []
    browser.close()


def _stored_totp_secret(server: ServerProcess, user_id: str) -> str:
    rows = server.query(
        "SELECT secret FROM authenticators WHERE user_id = ? AND kind = 'totp'", user_id
    )
    assert len(rows) == 1
    value: str = rows[0][0]
    return value


def test_totp_secret_is_sealed_under_the_kek_and_resealed_when_the_kek_rotates(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    # A stolen database alone must not give the second factor, and dropping an old KEK after
    # a rotation must not lock users out of theirs (start-up re-seals: keys.reencrypt).
    server = fresh_server
    server.start()  # no KEK: stored as given, as an existing install has them
    email, user_id, secret, _ = user_with_totp(server)
    assert _stored_totp_secret(server, user_id) == secret
    server.stop()

    kek1, kek2 = tmp_path / "kek1", tmp_path / "kek2"
    kek1.write_text(KEK_1)
    kek2.write_text(KEK_2)
    server.config["key_encryption_key_file"] = str(kek1)
    server.start()  # sealed at start
    sealed = _stored_totp_secret(server, user_id)
    assert sealed.startswith("enc:v1:") and secret not in sealed
    server.stop()

    server.config["key_encryption_key_file"] = str(kek2)
    server.config["old_key_encryption_key_files"] = [str(kek1)]
    server.start()  # re-sealed under the new KEK
    resealed = _stored_totp_secret(server, user_id)
    assert resealed.startswith("enc:v1:") and secret not in resealed
    assert resealed.split(":")[2] != sealed.split(":")[2]
    server.stop()

    del server.config["old_key_encryption_key_files"]
    server.start()  # the old KEK is gone: only a re-sealed secret can still be read
    r, flow, browser = start_login(server, email, PASSWORD)
    tokens = finish_login(server, answer_totp(browser, r, secret), flow)
    assert claims(tokens["id_token"])["amr"] == MFA_AMR
    browser.close()
