"""The portal and /settings/sessions over plain HTTP (no JavaScript): sign-in with `next`,
the admin role, CSRF, confirmation steps, and the user's own session list."""

from __future__ import annotations

import re

import httpx2
import pytest

from agtest.server import CSRF_RE, Browser, ServerProcess, exchange, login, new_email, refresh

PASSWORD = "correct horse battery"


def signed_in(server: ServerProcess, email: str, next_path: str) -> Browser:
    browser = Browser(server.url)
    r = browser.submit(f"/login?next={next_path}", email, PASSWORD)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == next_path
    return browser


def csrf(page: httpx2.Response) -> str:
    m = CSRF_RE.search(page.text)
    assert m
    return m.group(1)


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example.com/x",
        "/\\evil.example.com",
        "https://evil.example.com/",
        "javascript:alert(1)",
        "evil",
        "/%0d%0aSet-Cookie:x=1",
        "/ok\x00",
    ],
)
def test_login_next_only_goes_to_local_paths(authgear_server: ServerProcess, target: str) -> None:
    email = new_email()
    authgear_server.create_user(email, PASSWORD)
    browser = Browser(authgear_server.url)
    try:
        page = browser.http.get("/login", params={"next": target})
        assert page.status_code == 200
        r = browser.http.post(
            "/login",
            params={"next": target},
            data={"csrf_token": csrf(page), "email": email, "password": PASSWORD},
        )
        assert r.status_code == 303
        location = r.headers["location"]
        # %0d%0a stays percent-encoded: a path, not a header break
        assert location in ("/", target) and not location.startswith("//")
        if target.startswith("/%0d"):
            assert location == target
        else:
            assert location == "/"
    finally:
        browser.close()


def test_login_next_is_kept_through_errors_and_the_signup_link(
    authgear_server: ServerProcess,
) -> None:
    browser = Browser(authgear_server.url)
    try:
        page = browser.http.get("/login", params={"next": "/settings/sessions"})
        assert 'action="/login?next=%2Fsettings%2Fsessions"' in page.text
        assert 'href="/signup?next=%2Fsettings%2Fsessions"' in page.text
        r = browser.http.post(
            "/login?next=%2Fsettings%2Fsessions",
            data={"csrf_token": csrf(page), "email": "x@example.com", "password": "wrong-pass"},
        )
        assert r.status_code == 401
        assert 'action="/login?next=%2Fsettings%2Fsessions"' in r.text
        # sign-up honours it too
        email = new_email()
        r = browser.submit("/signup?next=%2Fsettings%2Fsessions", email, PASSWORD)
        assert r.status_code == 303 and r.headers["location"] == "/settings/sessions"
    finally:
        browser.close()


def test_portal_needs_sign_in_and_the_admin_role(authgear_server: ServerProcess) -> None:
    r = httpx2.get(authgear_server.url + "/portal/users?q=a")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Fportal%2Fusers%3Fq%3Da"
    r = httpx2.post(authgear_server.url + "/portal/users/x/disable")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")

    plain = new_email()
    authgear_server.create_user(plain, PASSWORD)
    browser = signed_in(authgear_server, plain, "/portal/users")
    try:
        r = browser.http.get("/portal/users")
        assert r.status_code == 403 and "does not have the admin role" in r.text
        r = browser.http.get("/portal/audit")
        assert r.status_code == 403
    finally:
        browser.close()


def test_portal_revoke_with_confirmation_and_csrf(authgear_server: ServerProcess) -> None:
    server = authgear_server
    admin_email = new_email()
    server.create_user(admin_email, PASSWORD, "--role", "admin")
    target = new_email()
    uid = server.create_user(target, PASSWORD)
    cb, flow, tb = login(server, target, PASSWORD)
    tb.close()
    tokens = exchange(server, cb["code"], flow).json()
    grant_id = tokens["refresh_token"].split(".")[0]

    admin = signed_in(server, admin_email, "/portal")
    try:
        page = admin.http.get("/portal/users", params={"q": target})
        assert page.status_code == 200 and f'href="/portal/users/{uid}"' in page.text
        assert "Content-Security-Policy" in page.headers
        user_page = admin.http.get(f"/portal/users/{uid}")
        assert "App session" in user_page.text and "Browser session" in user_page.text
        confirm_url = f"/portal/users/{uid}/sessions/{grant_id}/revoke"
        assert f'href="{confirm_url}"' in user_page.text

        confirm = admin.http.get(confirm_url)
        assert confirm.status_code == 200 and "Revoke this session?" in confirm.text
        # GET changed nothing
        assert refresh(server, tokens["refresh_token"]).status_code == 200
        # a POST without the CSRF token (a cross-site form) is refused and changes nothing
        assert admin.http.post(confirm_url, data={}).status_code == 403
        assert admin.http.post(confirm_url, data={"csrf_token": "x" * 43}).status_code == 403
        assert refresh(server, tokens["refresh_token"]).status_code == 200

        r = admin.http.post(confirm_url, data={"csrf_token": csrf(confirm)})
        assert r.status_code == 303 and r.headers["location"] == f"/portal/users/{uid}?done=revoked"
        assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
        done = admin.http.get(r.headers["location"])
        assert 'role="status"' in done.text and "was revoked" in done.text
        assert admin.http.get(confirm_url).status_code == 404

        # disable / enable / revoke all, each through its confirmation page
        for action, expect in (
            ("disable", "Disabled"),
            ("enable", "Active"),
            ("revoke-all", "No active sessions"),
        ):
            step = admin.http.get(f"/portal/users/{uid}/{action}")
            assert step.status_code == 200
            r = admin.http.post(f"/portal/users/{uid}/{action}", data={"csrf_token": csrf(step)})
            assert r.status_code == 303
            assert expect in admin.http.get(r.headers["location"]).text

        audit = admin.http.get("/portal/audit")
        assert audit.status_code == 200
        for label in ("Revoked session", "Disabled user", "Enabled user", "Revoked all sessions"):
            assert label in audit.text
        assert f"Portal: {admin_email}" in audit.text
        assert admin.http.get("/portal/users/nobody").status_code == 404
        assert admin.http.get(f"/portal/users/{uid}/explode").status_code == 404

        # delete, confirmed: back to the list, the user is gone with their sessions
        step = admin.http.get(f"/portal/users/{uid}/delete")
        assert "This cannot be undone" in step.text
        r = admin.http.post(f"/portal/users/{uid}/delete", data={"csrf_token": csrf(step)})
        assert r.status_code == 303 and r.headers["location"] == "/portal/users?done=deleted"
        assert "were deleted" in admin.http.get(r.headers["location"]).text
        assert admin.http.get(f"/portal/users/{uid}").status_code == 404
        assert (
            target
            not in admin.http.get("/portal/users", params={"q": target})
            .text.split("<caption>", 1)[1]
            .split("</caption>", 1)[1]
        )
    finally:
        admin.close()


def test_settings_sessions_sign_out_other_and_this_one(authgear_server: ServerProcess) -> None:
    server = authgear_server
    assert httpx2.get(server.url + "/settings/sessions").headers["location"] == (
        "/login?next=%2Fsettings%2Fsessions"
    )
    email = new_email()
    server.create_user(email, PASSWORD)
    cb, flow, app_browser = login(server, email, PASSWORD)
    app_browser.close()
    tokens = exchange(server, cb["code"], flow).json()
    grant_id = tokens["refresh_token"].split(".")[0]
    other_email = new_email()
    server.create_user(other_email, PASSWORD)
    cb2, flow2, ob = login(server, other_email, PASSWORD)
    ob.close()
    others = exchange(server, cb2["code"], flow2).json()
    other_grant = others["refresh_token"].split(".")[0]

    me = signed_in(server, email, "/settings/sessions")
    try:
        page = me.http.get("/settings/sessions")
        assert page.status_code == 200
        assert "This browser" in page.text
        forms = re.findall(r'action="/settings/sessions/([^/"]+)/revoke"', page.text)
        assert len(forms) == 3 and grant_id in forms
        # someone else's session: not found, and it still works
        r = me.http.post(
            f"/settings/sessions/{other_grant}/revoke", data={"csrf_token": csrf(page)}
        )
        assert r.status_code == 404
        assert refresh(server, others["refresh_token"]).status_code == 200
        # no CSRF token: refused
        assert me.http.post(f"/settings/sessions/{grant_id}/revoke").status_code == 403

        r = me.http.post(f"/settings/sessions/{grant_id}/revoke", data={"csrf_token": csrf(page)})
        assert (
            r.status_code == 303 and r.headers["location"] == "/settings/sessions?done=signed-out"
        )
        assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"

        page = me.http.get("/settings/sessions")
        current = re.search(
            r'<h2>[^<]*<span class="badge on">This browser</span></h2>.*?'
            r'action="/settings/sessions/([^/"]+)/revoke"',
            page.text,
            re.S,
        )
        assert current
        r = me.http.post(
            f"/settings/sessions/{current.group(1)}/revoke", data={"csrf_token": csrf(page)}
        )
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        assert me.http.get("/settings/sessions").status_code == 303
    finally:
        me.close()


def test_portal_odd_query_parameters_are_not_errors(authgear_server: ServerProcess) -> None:
    """Cursors the portal did not hand out show the first page, never a 500 ('²' is a digit
    to str.isdigit() but not to int())."""
    admin_email = new_email()
    authgear_server.create_user(admin_email, PASSWORD, "--role", "admin")
    browser = signed_in(authgear_server, admin_email, "/portal/users")
    try:
        for path in ("/portal/audit", "/portal/users"):
            for cursor in ("²", "١٢", "-1", "x" * 2000, "%00"):
                r = browser.http.get(path, params={"cursor": cursor})
                assert r.status_code == 200, (path, cursor, r.status_code)
    finally:
        browser.close()
