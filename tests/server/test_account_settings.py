"""/settings/account through real HTTP on SQLite and PostgreSQL: change the password (the
current one counted like a sign-in), change the email (a code to the new address first, a notice
to the old one, a taken address told apart from nothing), and verify the email (optional mode):
``email_verified`` then follows in userinfo, the ID token, access token claims, the resolver's
headers and the admin API."""

from __future__ import annotations

import httpx2
import jwt

from agtest.mail import code_of, link_of, outbox_to, text_of, wait_outbox
from agtest.pages import Pages
from agtest.server import ServerProcess, exchange, login, new_email, refresh

PASSWORD = "correct horse battery"
NEW = "a brand new passphrase"
VERIFIED_CLAIM = "https://authgear.com/claims/user/is_verified"


def _signed_in(server: ServerProcess, email: str, password: str = PASSWORD) -> Pages:
    pages = Pages(server.url)
    r = pages.login(email, password)
    assert r.status_code == 303, r.text
    return pages


def _user(server: ServerProcess) -> str:
    email = new_email()
    server.create_user(email, PASSWORD)
    return email


def _change_password(
    pages: Pages, current: str, new: str, confirm: str | None = None
) -> httpx2.Response:
    return pages.post(
        "/settings/account/password",
        {
            "current_password": current,
            "new_password": new,
            "new_password_confirm": new if confirm is None else confirm,
        },
        page="/settings/account",
    )


def test_change_password_ends_other_sessions_keeps_this_one_and_mails_a_notice(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = _user(server)
    cb, flow, other_browser = login(server, email, PASSWORD)
    app = exchange(server, cb["code"], flow).json()
    pages = _signed_in(server, email)
    r = _change_password(pages, PASSWORD, NEW)
    assert r.status_code == 303
    assert r.headers["location"] == "/settings/account?done=password-others"
    page = pages.get(r.headers["location"])
    assert page.status_code == 200 and "signed out everywhere else" in page.text
    assert refresh(server, app["refresh_token"]).json()["error"] == "invalid_grant"
    assert "You are not signed in" in other_browser.http.get("/").text
    notice = wait_outbox(server.data_dir, email, "password_changed")
    assert "changed in your account settings" in text_of(notice)
    pages.close()
    other_browser.close()


def test_change_password_with_a_wrong_current_password_is_refused_and_counts_toward_lockout(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = _user(server)
    pages = _signed_in(server, email)
    statuses = [_change_password(pages, f"wrong guess {i}", NEW).status_code for i in range(6)]
    assert statuses == [401] * 6
    # Locked like a sign-in: even the right password is not checked now.
    locked = _change_password(pages, PASSWORD, NEW)
    assert locked.status_code == 429 and "Too many attempts" in locked.text
    pages.close()
    probe = Pages(server.url)
    assert probe.login(email, PASSWORD).status_code == 429
    probe.close()


def test_change_password_names_every_broken_rule_and_changes_nothing(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = _user(server)
    pages = _signed_in(server, email)
    r = _change_password(pages, PASSWORD, "x")
    assert r.status_code == 400
    assert "Use at least 8 characters" in r.text
    r = _change_password(pages, PASSWORD, NEW, confirm="not the same")
    assert r.status_code == 400 and "not the same" in r.text
    pages.close()
    assert _signed_in(server, email, PASSWORD)


def test_change_email_needs_a_code_from_the_new_address_and_notifies_the_old_one(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    old, new = _user(server), new_email()
    pages = _signed_in(server, old)
    r = pages.post(
        "/settings/account/email",
        {"new_email": new, "password": PASSWORD},
        page="/settings/account",
    )
    assert r.status_code == 303
    page = pages.get("/settings/account")
    assert f"Enter the code we sent to <strong>{new}</strong>" in page.text
    code = code_of(wait_outbox(server.data_dir, new, "change_email"))
    # Not yet: the old address still signs in.
    assert Pages(server.url).login(old, PASSWORD).status_code == 303
    wrong = pages.post_with(
        "/settings/account/email/confirm", {"code": f"{(int(code) + 7) % 10**6:06d}"}, page.text
    )
    assert wrong.status_code == 400 and "not valid" in wrong.text
    done = pages.post_with("/settings/account/email/confirm", {"code": code}, page.text)
    assert done.status_code == 303 and done.headers["location"] == "/settings/account?done=email"
    notice = wait_outbox(server.data_dir, old, "email_changed")
    assert new in text_of(notice)
    assert Pages(server.url).login(old, PASSWORD).status_code == 401
    assert Pages(server.url).login(new, PASSWORD).status_code == 303
    # The new address was proven by the code: verified.
    rows = server.query("SELECT email, email_verified FROM users WHERE email = ?", new)
    assert rows == [(new, True)] or rows == [(new, 1)]
    pages.close()


def test_change_to_a_taken_address_answers_like_any_other_and_mails_nobody(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    me, taken, free = _user(server), _user(server), new_email()
    pages = _signed_in(server, me)
    answers = []
    for target in (taken, free):
        r = pages.post(
            "/settings/account/email",
            {"new_email": target, "password": PASSWORD},
            page="/settings/account",
        )
        answers.append((r.status_code, r.headers.get("location")))
        shown = pages.get("/settings/account").text
        assert f"Enter the code we sent to <strong>{target}</strong>" in shown
        # Within the cooldown only with limits on; the session server has them off.
    assert answers[0] == answers[1] == (303, "/settings/account?done=code-sent#confirm-email")
    wait_outbox(server.data_dir, free, "change_email")
    assert outbox_to(server.data_dir, taken, "change_email") == []
    pages.close()


def test_change_email_needs_the_current_password(authgear_server: ServerProcess) -> None:
    server = authgear_server
    me, new = _user(server), new_email()
    pages = _signed_in(server, me)
    r = pages.post(
        "/settings/account/email",
        {"new_email": new, "password": "not my password"},
        page="/settings/account",
    )
    assert r.status_code == 401 and "current password is not correct" in r.text
    assert outbox_to(server.data_dir, new) == []
    pages.close()


def test_optional_verification_banner_code_and_email_verified_everywhere(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = new_email()
    cb, flow, browser = login(server, email, PASSWORD, signup=True)
    before = exchange(server, cb["code"], flow).json()
    assert (
        jwt.decode(before["id_token"], options={"verify_signature": False})[VERIFIED_CLAIM] is False
    )
    pages = Pages(server.url)
    pages.http.cookies = browser.http.cookies
    home = pages.get("/")
    assert "is not verified" in home.text and 'id="verify-banner"' in home.text
    r = pages.post("/settings/account/verify", {}, page="/")
    assert r.status_code == 303 and r.headers["location"] == "/verify-email"
    message = wait_outbox(server.data_dir, email, "verify_email")
    page = pages.get("/verify-email")
    wrong = pages.post_with(
        "/verify-email", {"code": f"{(int(code_of(message)) + 1) % 10**6:06d}"}, page.text
    )
    assert wrong.status_code == 400
    ok = pages.post_with("/verify-email", {"code": code_of(message)}, page.text)
    assert ok.status_code == 303 and ok.headers["location"] == "/settings/account?done=verified"
    assert 'id="verify-banner"' not in pages.get("/").text

    # Every view of the user follows at once: userinfo, the resolver, and new tokens.
    auth = {"Authorization": f"Bearer {before['access_token']}"}
    assert httpx2.get(server.url + "/oauth2/userinfo", headers=auth).json()["email_verified"]
    resolved = httpx2.get(server.url + "/_resolver/resolve", headers=auth)
    assert resolved.headers["X-Authgear-User-Verified"] == "true"
    after = refresh(server, before["refresh_token"]).json()
    for token in (after["id_token"], after["access_token"]):
        assert jwt.decode(token, options={"verify_signature": False})[VERIFIED_CLAIM] is True
    pages.close()
    browser.close()


def test_verification_link_shows_a_button_and_verifies_on_post(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = new_email()
    pages = Pages(server.url)
    assert pages.signup(email, PASSWORD).status_code == 303
    pages.post("/settings/account/verify", {}, page="/settings/account")
    link = link_of(wait_outbox(server.data_dir, email, "verify_email"))
    # Another browser (no session) opens it: GET shows a button and spends nothing.
    other = Pages(server.url)
    shown = other.get(link.removeprefix(server.url))
    assert shown.status_code == 200 and "Verify my email address" in shown.text
    assert other.get(link.removeprefix(server.url)).status_code == 200
    token = link.rpartition("=")[2]
    done = other.post_with("/verify-email", {"token": token}, shown.text)
    assert done.status_code == 200 and "is verified" in done.text
    assert other.post_with("/verify-email", {"token": token}, shown.text).status_code == 400
    assert "Verified" in pages.get("/settings/account").text
    pages.close()
    other.close()


def test_settings_index_links_every_settings_page(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = _user(server)
    pages = _signed_in(server, email)
    page = pages.get("/settings")
    assert page.status_code == 200
    for href, text in (
        ("/settings/sessions", "Sessions"),
        ("/settings/account", "Password and email"),
        ("/settings/security", "Two-factor, passkeys and linked accounts"),
    ):
        assert f'<a href="{href}">{text}</a>' in page.text
    pages.close()
    anonymous = Pages(server.url)
    for path in ("/settings", "/settings/account", "/verify-email"):
        r = anonymous.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    anonymous.close()
