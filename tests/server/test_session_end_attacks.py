"""One way to end a session (issue 9 point 6), on SQLite and PostgreSQL.

The attack: a code issued just before sign-out was still exchangeable after it, for a refresh
token (``/logout`` and ``end_session`` ended the browser session by another path than the admin
revoke, which deleted codes). Now every way (the home page's sign-out, RP-initiated logout,
/settings/sessions, the admin API, the portal and the CLI) goes through storage's one
``end_session``, which deletes the session's pending codes and its access tokens.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import httpx2
import jwt
import pytest

from agtest.server import (
    AUTHGEAR,
    CSRF_RE,
    Browser,
    Flow,
    ServerProcess,
    exchange,
    login,
    new_email,
)

PASSWORD = "correct horse battery"


class SignedIn:
    """A user with a browser session, an access token of that session (no offline_access), and
    a code the browser got silently and has not exchanged yet."""

    def __init__(self, server: ServerProcess, email: str) -> None:
        self.server = server
        cb, flow, self.browser = login(server, email, PASSWORD, scope="openid")
        first = exchange(server, cb["code"], flow).json()
        self.id_token = first["id_token"]
        self.access_token = first["access_token"]
        self.sid = jwt.decode(self.id_token, options={"verify_signature": False})["sid"]
        self.pending = Flow.new()
        r = self.browser.authorize(**self.pending.params())
        assert r.status_code == 303 and "code=" in r.headers["location"], r.text
        self.code = dict(httpx2.URL(r.headers["location"]).params)["code"]

    def csrf(self, path: str) -> str:
        page = self.browser.http.get(path)
        m = CSRF_RE.search(page.text)
        assert m, page.text[:300]
        return m.group(1)

    def userinfo_status(self) -> int:
        auth = {"Authorization": f"Bearer {self.access_token}"}
        return httpx2.get(self.server.url + "/oauth2/userinfo", headers=auth).status_code


def _cli(server: ServerProcess, *args: str) -> str:
    out = subprocess.run(
        [AUTHGEAR, "admin", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def via_logout(s: SignedIn) -> None:
    r = s.browser.http.post("/logout", data={"csrf_token": s.csrf("/")})
    assert r.status_code == 303, r.text


def via_end_session(s: SignedIn) -> None:
    r = s.browser.http.get("/oauth2/end_session", params={"id_token_hint": s.id_token})
    assert r.status_code == 200 and "You have signed out" in r.text, r.text


def via_settings(s: SignedIn) -> None:
    token = s.csrf("/settings/sessions")
    r = s.browser.http.post(f"/settings/sessions/{s.sid}/revoke", data={"csrf_token": token})
    assert r.status_code == 303, r.text


def via_admin_api(s: SignedIn) -> None:
    key = _cli(s.server, "keys", "create", "--name", "end-session-test").splitlines()[-1]
    r = httpx2.delete(
        f"{s.server.url}/_api/admin/sessions/{s.sid}", headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 204, r.text


def via_portal(s: SignedIn) -> None:
    admin_email = new_email()
    s.server.create_user(admin_email, PASSWORD, "--role", "admin")
    admin = Browser(s.server.url)
    try:
        assert admin.submit("/login?next=/portal", admin_email, PASSWORD).status_code == 303
        uid = jwt.decode(s.id_token, options={"verify_signature": False})["sub"]
        url = f"/portal/users/{uid}/sessions/{s.sid}/revoke"
        m = CSRF_RE.search(admin.http.get(url).text)
        assert m
        assert admin.http.post(url, data={"csrf_token": m.group(1)}).status_code == 303
    finally:
        admin.close()


def via_cli(s: SignedIn) -> None:
    assert "revoked idp_session" in _cli(s.server, "sessions", "revoke", s.sid)


WAYS: dict[str, Callable[[SignedIn], None]] = {
    "logout": via_logout,
    "end_session": via_end_session,
    "settings": via_settings,
    "admin_api": via_admin_api,
    "portal": via_portal,
    "cli": via_cli,
}


@pytest.mark.parametrize("way", list(WAYS))
def test_code_issued_before_sign_out_is_invalid_grant_after_it(
    authgear_server: ServerProcess, way: str
) -> None:
    email = new_email()
    authgear_server.create_user(email, PASSWORD)
    s = SignedIn(authgear_server, email)
    try:
        assert s.userinfo_status() == 200
        WAYS[way](s)
        r = exchange(authgear_server, s.code, s.pending)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        # The browser session's own access token died with it, and its cookie signs no one in.
        assert s.userinfo_status() == 401
        again = s.browser.authorize(**Flow.new().params())
        assert again.headers["location"].startswith("/login?flow=")
        # Nothing of the session is left in storage.
        assert authgear_server.query("SELECT id FROM idp_sessions WHERE id = ?", s.sid) == []
        assert (
            authgear_server.query(
                "SELECT code_hash FROM auth_codes WHERE idp_session_id = ? AND used_at IS NULL",
                s.sid,
            )
            == []
        )
    finally:
        s.browser.close()


def test_app_sessions_created_from_the_browser_session_outlive_its_sign_out(
    authgear_server: ServerProcess,
) -> None:
    """The documented choice: an offline grant is the app's own session (Authgear's model)."""
    email = new_email()
    authgear_server.create_user(email, PASSWORD)
    s = SignedIn(authgear_server, email)
    try:
        app = exchange(authgear_server, s.code, s.pending).json()
        via_logout(s)
        r = httpx2.post(
            authgear_server.url + "/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "client_id": s.pending.client_id,
                "refresh_token": app["refresh_token"],
            },
        )
        assert r.status_code == 200, r.text
    finally:
        s.browser.close()
