"""Forgot password through real HTTP on SQLite and PostgreSQL, and the attacks on it: telling
which addresses have accounts, reused, expired and someone else's codes, guessing, a link opened
by a mail scanner, two uses of one code at once, a hostile Host header. Each refusal is clear
and changes nothing."""

from __future__ import annotations

import re
import threading

import httpx2

from agtest.mail import code_of, link_of, outbox_to, wait_outbox
from agtest.pages import Pages, csrf_of
from agtest.server import ServerProcess, exchange, login, new_email, refresh

PASSWORD = "correct horse battery"
NEW = "a brand new passphrase"


def _user(server: ServerProcess) -> str:
    email = new_email()
    server.create_user(email, PASSWORD)
    return email


def _request_code(server: ServerProcess, email: str, count: int = 1) -> tuple[str, str]:
    pages = Pages(server.url)
    try:
        r = pages.forgot(email)
        assert r.status_code == 200, r.text
    finally:
        pages.close()
    message = wait_outbox(server.data_dir, email, "reset_password", count=count)
    return code_of(message), link_of(message)


def _reset(
    server: ServerProcess, email: str, code: str, password: str = NEW, confirm: str | None = None
) -> httpx2.Response:
    pages = Pages(server.url)
    try:
        return pages.post(
            "/reset-password",
            {
                "email": email,
                "code": code,
                "password": password,
                "password_confirm": password if confirm is None else confirm,
            },
            page="/forgot-password",
        )
    finally:
        pages.close()


def _signs_in(server: ServerProcess, email: str, password: str) -> bool:
    pages = Pages(server.url)
    try:
        r = pages.login(email, password)
        assert r.status_code in (303, 401), r.text
        return r.status_code == 303
    finally:
        pages.close()


def _normalize(html: str, email: str) -> str:
    return html.replace(email, "EMAIL").replace(csrf_of(html), "CSRF")


def test_forgot_password_answers_alike_for_known_and_unknown_addresses_and_does_the_same_work(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    known, unknown = _user(server), new_email()
    pages = Pages(server.url)
    answers = [pages.forgot(known), pages.forgot(unknown)]
    pages.close()
    assert [r.status_code for r in answers] == [200, 200]
    assert _normalize(answers[0].text, known) == _normalize(answers[1].text, unknown)
    # The same work: a code row for each address (so limits and cooldowns count alike) ...
    rows = server.query(
        "SELECT subject, user_id IS NULL FROM email_codes WHERE purpose = 'reset_password' "
        "AND subject IN (?, ?) ORDER BY subject",
        known.lower(),
        unknown.lower(),
    )
    assert sorted(rows) == sorted([(known.lower(), False), (unknown.lower(), True)])
    # ... and only the known address gets mail.
    wait_outbox(server.data_dir, known, "reset_password")
    assert outbox_to(server.data_dir, unknown) == []


def test_reset_with_the_emailed_code_ends_every_session_and_mails_a_notice(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = _user(server)
    cb, flow, browser = login(server, email, PASSWORD)
    tokens = exchange(server, cb["code"], flow).json()
    assert browser.http.get("/").text.count("You are signed in") == 1

    code, _ = _request_code(server, email)
    # The code is stored only as a keyed hash.
    stored = server.query(
        "SELECT code_hash, link_hash FROM email_codes WHERE subject = ?", email.lower()
    )
    assert stored and code not in str(stored)
    r = _reset(server, email, code)
    assert r.status_code == 303 and r.headers["location"] == "/reset-password/done"

    assert not _signs_in(server, email, PASSWORD)
    assert _signs_in(server, email, NEW)
    assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert "You are not signed in" in browser.http.get("/").text
    notice = wait_outbox(server.data_dir, email, "password_changed")
    assert "reset with a code" in notice.get_body(("plain",)).get_content()
    assert "signed out everywhere" in notice.get_body(("plain",)).get_content()
    browser.close()


def test_reused_reset_code_is_refused_and_changes_nothing(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = _user(server)
    code, link = _request_code(server, email)
    assert _reset(server, email, code).status_code == 303
    again = _reset(server, email, code, password="yet another passphrase")
    assert again.status_code == 400
    assert "not valid or has expired" in again.text
    assert _signs_in(server, email, NEW)
    # The link of the same mail is spent with it.
    pages = Pages(server.url)
    assert pages.get(link.removeprefix(server.url)).status_code == 400
    pages.close()


def test_expired_reset_code_is_refused_and_changes_nothing(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = _user(server)
    code, _ = _request_code(server, email)
    server.query(
        "UPDATE email_codes SET expires_at = 1 WHERE subject = ? RETURNING subject", email.lower()
    )
    r = _reset(server, email, code)
    assert r.status_code == 400 and "not valid or has expired" in r.text
    assert _signs_in(server, email, PASSWORD)


def test_someone_elses_reset_code_is_refused_for_another_address(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    mine, victim = _user(server), _user(server)
    my_code, _ = _request_code(server, mine)
    _request_code(server, victim)
    r = _reset(server, victim, my_code, password="attacker's passphrase")
    assert r.status_code == 400
    assert _signs_in(server, victim, PASSWORD)
    # My code was never the victim's: it still works for my own address.
    assert _reset(server, mine, my_code).status_code == 303


def test_guessing_codes_revokes_the_code_after_five_wrong_tries(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = _user(server)
    code, _ = _request_code(server, email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert _reset(server, email, wrong).status_code == 400
    # Revoked: the right code no longer works either, and nothing changed.
    r = _reset(server, email, code)
    assert r.status_code == 400 and "not valid or has expired" in r.text
    assert _signs_in(server, email, PASSWORD)
    # A new code works again.
    code2, _ = _request_code(server, email, count=2)
    assert _reset(server, email, code2).status_code == 303


def test_link_opened_by_a_mail_scanner_is_not_spent_and_works_once(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = _user(server)
    _, link = _request_code(server, email)
    path = link.removeprefix(server.url)
    pages = Pages(server.url)
    first, second = pages.get(path), pages.get(path)
    assert first.status_code == second.status_code == 200
    assert email in second.text and "Choose a new password" in second.text
    token = link.rpartition("=")[2]
    r = pages.post_with(
        "/reset-password", {"token": token, "password": NEW, "password_confirm": NEW}, second.text
    )
    assert r.status_code == 303
    replay = pages.post_with(
        "/reset-password",
        {"token": token, "password": "another one again", "password_confirm": "another one again"},
        second.text,
    )
    assert replay.status_code == 400 and "not valid or has expired" in replay.text
    assert pages.get(path).status_code == 400
    pages.close()
    assert _signs_in(server, email, NEW)


def test_two_concurrent_resets_with_one_code_only_one_wins(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = _user(server)
    code, _ = _request_code(server, email)
    candidates = [f"concurrent passphrase {i}" for i in range(6)]
    results: dict[str, int] = {}
    barrier = threading.Barrier(len(candidates))

    def attempt(password: str) -> None:
        pages = Pages(server.url)
        page = pages.get("/forgot-password")
        barrier.wait()
        r = pages.post_with(
            "/reset-password",
            {"email": email, "code": code, "password": password, "password_confirm": password},
            page.text,
        )
        results[password] = r.status_code
        pages.close()

    threads = [threading.Thread(target=attempt, args=(p,)) for p in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    winners = [p for p, status in results.items() if status == 303]
    assert len(winners) == 1, results
    assert sorted(results.values()) == [303] + [400] * (len(candidates) - 1)
    assert _signs_in(server, email, winners[0])


def test_reset_link_uses_the_public_origin_not_a_hostile_host_header(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = _user(server)
    pages = Pages(server.url, headers={"Host": "evil.example"})
    assert pages.forgot(email).status_code == 200
    pages.close()
    message = wait_outbox(server.data_dir, email, "reset_password")
    assert link_of(message).startswith(server.url + "/reset-password?code=")
    assert "evil.example" not in str(message)


def test_new_password_must_meet_the_policy_and_its_confirmation_without_spending_the_code(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = _user(server)
    code, _ = _request_code(server, email)
    short = _reset(server, email, code, password="short")
    assert short.status_code == 400 and "Use at least 8 characters" in short.text
    own = _reset(server, email, code, password=email.upper())
    assert own.status_code == 400 and "email address" in own.text
    mismatch = _reset(server, email, code, confirm="something else entirely")
    assert mismatch.status_code == 400 and "not the same" in mismatch.text
    assert _signs_in(server, email, PASSWORD)
    assert _reset(server, email, code).status_code == 303


def test_reset_forms_refuse_a_missing_csrf_token_and_a_foreign_origin(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = _user(server)
    code, _ = _request_code(server, email)
    no_token = httpx2.post(
        server.url + "/reset-password",
        data={"email": email, "code": code, "password": NEW, "password_confirm": NEW},
    )
    assert no_token.status_code == 403
    pages = Pages(server.url)
    page = pages.get("/forgot-password")
    foreign = pages.http.post(
        "/forgot-password",
        data={"csrf_token": csrf_of(page.text), "email": email},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    pages.close()
    assert _signs_in(server, email, PASSWORD)
    assert re.fullmatch(r"\d{6}", code)
