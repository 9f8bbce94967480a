"""Administrators' recovery actions on real parts: send a reset, mark verified, set a password,
through the admin API, the portal (forms with CSRF) and the CLI, each in the audit log without
the password (SQLite and PostgreSQL)."""

from __future__ import annotations

import subprocess

import httpx2

from agtest.mail import code_of, text_of, wait_outbox
from agtest.pages import Pages, csrf_of
from agtest.server import AUTHGEAR, ServerProcess, exchange, login, new_email, refresh

PASSWORD = "correct horse battery"


def _cli(
    server: ServerProcess, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUTHGEAR, "admin", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        input=input,
        timeout=120,
    )


def _api(server: ServerProcess) -> httpx2.Client:
    out = _cli(server, "keys", "create", "--name", "recovery-tests")
    assert out.returncode == 0, out.stderr
    return httpx2.Client(
        base_url=server.url + "/_api/admin",
        headers={"Authorization": f"Bearer {out.stdout.strip()}"},
        timeout=30,
    )


def _audit(api: httpx2.Client, user_id: str) -> list[dict[str, object]]:
    entries = api.get("/audit-log", params={"target_id": user_id}).json()["entries"]
    return list(entries)


def test_admin_api_sends_a_reset_marks_verified_and_sets_a_password(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    api = _api(server)
    email = new_email()
    user = api.post("/users", json={"email": email, "password": PASSWORD}).json()
    uid = user["id"]
    assert user["email_verified"] is False

    r = api.post(f"/users/{uid}/send-reset")
    assert r.status_code == 202 and r.json()["id"] == uid
    code = code_of(wait_outbox(server.data_dir, email, "reset_password"))
    assert len(code) == 6

    r = api.post(f"/users/{uid}/mark-verified")
    assert r.status_code == 200 and r.json()["email_verified"] is True
    assert api.get(f"/users/{uid}").json()["email_verified"] is True

    cb, flow, browser = login(server, email, PASSWORD)
    app = exchange(server, cb["code"], flow).json()
    weak = api.put(f"/users/{uid}/password", json={"password": "short"})
    assert weak.status_code == 400 and "at least 8" in weak.json()["error_description"]
    r = api.put(f"/users/{uid}/password", json={"password": "set by the admin 1"})
    assert r.status_code == 200 and r.json()["sessions_ended"] == 2
    assert refresh(server, app["refresh_token"]).json()["error"] == "invalid_grant"
    notice = wait_outbox(server.data_dir, email, "password_changed")
    assert "set by an administrator" in text_of(notice)
    assert Pages(server.url).login(email, "set by the admin 1").status_code == 303
    # The reset code mailed before is void once the password was set.
    reset = Pages(server.url).post(
        "/reset-password",
        {"email": email, "code": code, "password": "x" * 12, "password_confirm": "x" * 12},
        page="/forgot-password",
    )
    assert reset.status_code == 400

    kept = api.put(
        f"/users/{uid}/password",
        json={"password": "set again, sessions kept", "end_sessions": False},
    )
    assert kept.status_code == 200 and kept.json()["sessions_ended"] == 0

    actions = [e["action"] for e in _audit(api, uid)]
    for action in ("user.send_reset", "user.mark_verified", "user.set_password"):
        assert action in actions
    assert "set by the admin" not in str(_audit(api, uid))
    assert api.post("/users/nobody/send-reset").status_code == 404
    assert api.put("/users/nobody/password", json={"password": "whatever it is"}).status_code == 404
    browser.close()
    api.close()


def test_admin_api_refuses_recovery_actions_without_a_key(authgear_server: ServerProcess) -> None:
    base = authgear_server.url + "/_api/admin"
    assert httpx2.post(base + "/users/x/send-reset").status_code == 401
    assert httpx2.post(base + "/users/x/mark-verified").status_code == 401
    r = httpx2.put(base + "/users/x/password", json={"password": "whatever it is"})
    assert r.status_code == 401 and "whatever" not in r.text


def test_cli_sends_a_reset_marks_verified_and_sets_a_password(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    email = new_email()
    uid = server.create_user(email, PASSWORD)
    out = _cli(server, "users", "send-reset", email)
    assert out.returncode == 0, out.stderr
    assert "sent a password reset to" in out.stdout and "outbox" in out.stdout
    wait_outbox(server.data_dir, email, "reset_password")

    out = _cli(server, "users", "mark-verified", email)
    assert out.returncode == 0 and "marked verified" in out.stdout
    rows = server.query("SELECT email_verified FROM users WHERE email = ?", email)
    assert rows[0][0] in (True, 1)

    out = _cli(server, "users", "set-password", email, "--password-stdin", input="tiny\n")
    assert out.returncode == 1 and "at least 8" in out.stderr
    out = _cli(
        server, "users", "set-password", email, "--password-stdin", input="from the shell 42\n"
    )
    assert out.returncode == 0, out.stderr
    assert Pages(server.url).login(email, "from the shell 42").status_code == 303
    actions = server.query(
        "SELECT action, actor_type FROM audit_log WHERE target_id = ? ORDER BY id", uid
    )
    assert ("user.send_reset", "cli") in actions and ("user.set_password", "cli") in actions
    assert ("user.mark_verified", "cli") in actions
    missing = _cli(server, "users", "send-reset", "nobody@example.com")
    assert missing.returncode == 1 and "no such user" in missing.stderr


def test_portal_sends_a_reset_marks_verified_and_sets_a_password_behind_confirmations(
    authgear_server: ServerProcess,
) -> None:
    server = authgear_server
    admin_email, target = new_email(), new_email()
    server.create_user(admin_email, PASSWORD, "--role", "admin")
    uid = server.create_user(target, PASSWORD)
    admin = Pages(server.url)
    assert admin.login(admin_email, PASSWORD, path="/login?next=/portal").status_code == 303
    page = admin.get(f"/portal/users/{uid}")
    for action in ("send-reset", "mark-verified", "set-password"):
        assert f'href="/portal/users/{uid}/{action}"' in page.text

    for action, done in (("send-reset", "reset-sent"), ("mark-verified", "verified")):
        step = admin.get(f"/portal/users/{uid}/{action}")
        assert step.status_code == 200
        # Without the CSRF token nothing happens.
        assert admin.http.post(f"/portal/users/{uid}/{action}").status_code == 403
        r = admin.post_with(f"/portal/users/{uid}/{action}", {}, step.text)
        assert r.status_code == 303 and r.headers["location"] == f"/portal/users/{uid}?done={done}"
    wait_outbox(server.data_dir, target, "reset_password")

    step = admin.get(f"/portal/users/{uid}/set-password")
    assert 'name="password"' in step.text and "At least 8 characters." in step.text
    weak = admin.post_with(f"/portal/users/{uid}/set-password", {"password": "weak"}, step.text)
    assert weak.status_code == 400 and "Use at least 8 characters" in weak.text
    r = admin.post_with(
        f"/portal/users/{uid}/set-password",
        {"password": "portal chosen passphrase", "end_sessions": "1"},
        csrf_page(weak.text),
    )
    assert r.status_code == 303
    assert Pages(server.url).login(target, "portal chosen passphrase").status_code == 303
    audit = admin.get("/portal/audit").text
    for label in ("Sent a password reset", "Marked email verified", "Set a password"):
        assert label in audit
    assert "portal chosen passphrase" not in audit
    admin.close()


def csrf_page(html: str) -> str:
    """A page's HTML, checked to carry a CSRF token (for post_with)."""
    assert csrf_of(html)
    return html
