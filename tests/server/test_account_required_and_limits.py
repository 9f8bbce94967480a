"""``verification: required`` holds sign-up and sign-in until the address is verified; the
limits on codes (per IP, per address, the resend cooldown, checks per IP) are counted before the
work, atomically, alike for addresses with and without an account. Real HTTP, SQLite and
PostgreSQL."""

from __future__ import annotations

import threading

import httpx2
import jwt

from agtest.mail import code_of, link_of, outbox_to, wait_outbox
from agtest.pages import Pages, csrf_of
from agtest.server import Browser, Flow, ServerProcess, callback_params, exchange, new_email

PASSWORD = "correct horse battery"
VERIFIED_CLAIM = "https://authgear.com/claims/user/is_verified"


def _start_required(server: ServerProcess) -> None:
    server.config["verification"] = "required"
    server.start()


def _signup_in_flow(server: ServerProcess, email: str) -> tuple[Browser, Flow, httpx2.Response]:
    flow = Flow.new()
    browser = Browser(server.url)
    r = browser.authorize(**flow.params(), x_page="signup")
    assert r.status_code == 303
    return browser, flow, browser.submit(r.headers["location"], email, PASSWORD)


def test_required_verification_holds_signup_until_the_code_then_continues_the_oauth_flow(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    _start_required(server)
    email = new_email()
    browser, flow, held = _signup_in_flow(server, email)
    assert held.status_code == 303
    assert held.headers["location"].startswith("/flow/verify_email?flow=")
    # No session and no authorization code yet.
    assert "You are not signed in" in browser.http.get("/").text
    page = browser.http.get(held.headers["location"])
    assert page.status_code == 200 and f"We sent a code to {email}" in page.text
    code = code_of(wait_outbox(server.data_dir, email, "verify_email"))

    # The flow's URL is worthless in another browser (no cookie binding it), even with the code.
    thief = httpx2.Client(base_url=server.url, timeout=30)
    stolen = thief.get(held.headers["location"])
    assert stolen.status_code == 400 and "expired" in stolen.text

    done = browser.http.post(
        held.headers["location"], data={"csrf_token": csrf_of(page.text), "code": code}
    )
    params = callback_params(done)
    assert params["state"] == flow.state
    tokens = exchange(server, params["code"], flow).json()
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims[VERIFIED_CLAIM] is True
    assert "You are signed in" in browser.http.get("/").text
    browser.close()
    thief.close()


def test_required_verification_holds_signin_of_an_unverified_user_and_the_link_continues_it(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    _start_required(server)
    email = new_email()
    server.create_user(email, PASSWORD)  # created unverified by the CLI
    pages = Pages(server.url)
    held = pages.login(email, PASSWORD, path="/login?next=/settings")
    assert held.status_code == 303
    step = held.headers["location"]
    assert step.startswith("/flow/verify_email?flow=")
    step_page = pages.get(step)
    assert step_page.status_code == 200 and "I opened the link" in step_page.text
    link = link_of(wait_outbox(server.data_dir, email, "verify_email"))
    shown = pages.get(link.removeprefix(server.url))
    assert shown.status_code == 200
    token = link.rpartition("=")[2]
    done = pages.post_with("/verify-email", {"token": token}, shown.text)
    assert done.status_code == 200 and "is verified" in done.text
    # Back on the held sign-in: "continue" goes on to where it was heading.
    cont = pages.post_with(step, {"action": "continue"}, step_page.text)
    assert cont.status_code == 303 and cont.headers["location"] == "/settings"
    assert "Password and email" in pages.get("/settings").text
    # A verified user signs in without being held.
    again = Pages(server.url)
    assert again.login(email, PASSWORD).headers["location"] == "/"
    pages.close()
    again.close()


def test_wrong_code_on_the_held_signup_is_refused_and_signs_nobody_in(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    _start_required(server)
    email = new_email()
    browser, _, held = _signup_in_flow(server, email)
    page = browser.http.get(held.headers["location"])
    code = code_of(wait_outbox(server.data_dir, email, "verify_email"))
    wrong = browser.http.post(
        held.headers["location"],
        data={"csrf_token": csrf_of(page.text), "code": f"{(int(code) + 3) % 10**6:06d}"},
    )
    assert wrong.status_code == 400 and "not valid" in wrong.text
    cont = browser.http.post(
        held.headers["location"], data={"csrf_token": csrf_of(page.text), "action": "continue"}
    )
    assert cont.status_code == 400 and "not verified yet" in cont.text
    assert "You are not signed in" in browser.http.get("/").text
    browser.close()


def _limited(server: ServerProcess, **limits: int) -> None:
    server.config["rate_limits"] = {"enabled": True, **limits}
    server.start()


def test_flood_of_reset_requests_is_refused_per_ip_alike_for_unknown_addresses(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    _limited(server, code_sends_per_ip_per_hour=3)
    known = new_email()
    server.create_user(known, PASSWORD)
    pages = Pages(server.url)
    statuses = [pages.forgot(e).status_code for e in (known, new_email(), new_email())]
    assert statuses == [200, 200, 200]
    over = [pages.forgot(e) for e in (known, new_email())]
    assert [r.status_code for r in over] == [429, 429]
    assert all("from your network" in r.text for r in over)
    # Refused before any work: no code row for the refused address.
    rows = server.query("SELECT count(*) FROM email_codes")
    assert rows[0][0] == 3
    pages.close()


def test_resend_within_the_cooldown_is_refused_for_known_and_unknown_addresses(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    _limited(server)
    known, unknown = new_email(), new_email()
    server.create_user(known, PASSWORD)
    pages = Pages(server.url)
    for email in (known, unknown):
        assert pages.forgot(email).status_code == 200
        again = pages.forgot(email)
        assert again.status_code == 429 and "less than a minute ago" in again.text
    wait_outbox(server.data_dir, known, "reset_password")
    assert len(outbox_to(server.data_dir, known, "reset_password")) == 1
    pages.close()


def test_concurrent_reset_requests_for_one_address_send_one_mail(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    _limited(server)
    email = new_email()
    server.create_user(email, PASSWORD)
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        pages = Pages(server.url)
        page = pages.get("/forgot-password")
        barrier.wait()
        statuses.append(
            pages.post_with("/forgot-password", {"email": email}, page.text).status_code
        )
        pages.close()

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(statuses) == [200] + [429] * 7
    wait_outbox(server.data_dir, email, "reset_password")
    assert len(outbox_to(server.data_dir, email, "reset_password")) == 1


def test_reset_mails_to_one_address_are_capped_per_hour(fresh_server: ServerProcess) -> None:
    server = fresh_server
    _limited(server, code_sends_per_email_per_hour=2, code_resend_cooldown=1)
    email = new_email()
    server.create_user(email, PASSWORD)
    for count in (1, 2):
        pages = Pages(server.url)
        assert pages.forgot(email).status_code == 200
        wait_outbox(server.data_dir, email, "reset_password", count=count)
        server.query(
            "UPDATE email_codes SET created_at = created_at - 10 WHERE subject = ? "
            "RETURNING subject",
            email.lower(),
        )
        pages.close()
    pages = Pages(server.url)
    third = pages.forgot(email)
    assert third.status_code == 429 and "sent to this address" in third.text
    pages.close()


def test_flood_of_code_checks_from_one_ip_is_refused_and_right_codes_are_given_back(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    _limited(server, code_checks_per_ip_per_minute=4)
    email = new_email()
    server.create_user(email, PASSWORD)
    pages = Pages(server.url)
    assert pages.forgot(email).status_code == 200
    code = code_of(wait_outbox(server.data_dir, email, "reset_password"))
    form = {"email": email, "password": "a new passphrase", "password_confirm": "x"}
    # Right code, bad confirmation: refused before the code is checked (nothing counted).
    page = pages.get("/forgot-password").text
    for _ in range(3):
        r = pages.post_with("/reset-password", {**form, "code": code}, page)
        assert r.status_code == 400
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    ok_form = {**form, "password_confirm": form["password"]}
    # Short password with the right code: the code is checked (and given back), not spent.
    for _ in range(6):
        r = pages.post_with(
            "/reset-password",
            {**ok_form, "code": code, "password": "s", "password_confirm": "s"},
            page,
        )
        assert r.status_code == 400 and "at least 8" in r.text
    statuses = [
        pages.post_with("/reset-password", {**ok_form, "code": wrong}, page).status_code
        for _ in range(5)
    ]
    assert statuses == [400, 400, 400, 400, 429]
    pages.close()
    # The limit is per IP window; the code itself was not spent by the refused tries.
    rows = server.query("SELECT failed_attempts FROM email_codes WHERE subject = ?", email.lower())
    assert rows == [(4,)]
