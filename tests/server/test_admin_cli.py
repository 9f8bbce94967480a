"""`authgear admin ...`: users, sessions and keys from a shell, against a running server."""

from __future__ import annotations

import base64
import json
import subprocess

import httpx2

from agtest.server import AUTHGEAR, ServerProcess, exchange, login, new_email, refresh

PASSWORD = "correct horse battery"


def run(
    server: ServerProcess, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUTHGEAR, "admin", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        input=input,
    )


def ok(server: ServerProcess, *args: str, input: str | None = None) -> str:
    out = run(server, *args, input=input)
    assert out.returncode == 0, out.stderr
    return out.stdout


def fails(server: ServerProcess, *args: str) -> str:
    out = run(server, *args)
    assert out.returncode == 1, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("authgear: "), out.stderr
    return lines[0]


def test_users_create_list_disable_enable_delete(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = new_email()
    uid = ok(
        server, "users", "create", email, "--password-stdin", "--role", "ops", input=PASSWORD + "\n"
    ).strip()
    assert "a user with email" in fails(server, "users", "create", email, "--no-password")
    assert "not a valid email" in fails(server, "users", "create", "nope", "--no-password")

    listed = ok(server, "users", "list", "--search", email)
    assert uid in listed and email in listed and "active" in listed and "ops" in listed
    as_json = json.loads(ok(server, "users", "list", "--search", email, "--json"))
    assert as_json[0]["id"] == uid and as_json[0]["roles"] == ["ops"]

    cb, flow, browser = login(server, email, PASSWORD)
    browser.close()
    tokens = exchange(server, cb["code"], flow).json()

    assert "disabled" in ok(server, "users", "disable", email)
    assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert "disabled" in ok(server, "users", "list", "--search", uid)
    ok(server, "users", "enable", uid)
    assert refresh(server, tokens["refresh_token"]).status_code == 200

    ok(server, "users", "set-roles", uid, "a", "b")
    assert json.loads(ok(server, "users", "list", "--search", uid, "--json"))[0]["roles"] == [
        "a",
        "b",
    ]

    assert "--yes" in fails(server, "users", "delete", email)
    ok(server, "users", "delete", email, "--yes")
    assert refresh(server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert "no such user" in fails(server, "users", "disable", email)


def test_sessions_list_revoke_revoke_all(authgear_server: ServerProcess) -> None:
    server = authgear_server
    email = new_email()
    uid = server.create_user(email, PASSWORD)
    grants = []
    for _ in range(2):
        cb, flow, browser = login(server, email, PASSWORD)
        browser.close()
        grants.append(exchange(server, cb["code"], flow).json())

    sessions = json.loads(ok(server, "sessions", "list", email, "--json"))
    assert sorted(s["kind"] for s in sessions) == ["idp_session"] * 2 + ["offline_grant"] * 2
    table = ok(server, "sessions", "list", uid)
    assert table.splitlines()[0].split()[:3] == ["ID", "KIND", "CLIENT"]
    assert "offline_grant" in table and "test-native" in table

    first = grants[0]["refresh_token"].split(".")[0]
    assert "revoked offline_grant" in ok(server, "sessions", "revoke", first)
    assert refresh(server, grants[0]["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(server, grants[1]["refresh_token"]).status_code == 200
    assert "no such session" in fails(server, "sessions", "revoke", first)

    assert "revoked 3 sessions" in ok(server, "sessions", "revoke-all", email)
    assert refresh(server, grants[1]["refresh_token"]).json()["error"] == "invalid_grant"
    r = httpx2.get(
        server.url + "/oauth2/userinfo",
        headers={"Authorization": f"Bearer {grants[1]['access_token']}"},
    )
    assert r.status_code == 401
    assert json.loads(ok(server, "sessions", "list", email, "--json")) == []


def test_keys_and_the_audit_trail_of_the_cli(authgear_server: ServerProcess) -> None:
    server = authgear_server
    created = run(server, "keys", "create", "--name", "ci")
    assert created.returncode == 0
    key = created.stdout.strip()
    assert key.startswith("agk_") and len(created.stdout.splitlines()) == 1
    assert "shown once" in created.stderr and key not in created.stderr
    key_id = key.removeprefix("agk_").split(".")[0]
    headers = {"Authorization": f"Bearer {key}"}
    log = httpx2.get(
        server.url + "/_api/admin/audit-log", params={"target_id": key_id}, headers=headers
    ).json()["entries"]
    assert [e["action"] for e in log] == ["key.create"]
    assert log[0]["actor"]["type"] == "cli"
    assert "no such admin API key" in fails(server, "keys", "revoke", "nope")
    ok(server, "keys", "revoke", key_id)
    assert httpx2.get(server.url + "/_api/admin/users", headers=headers).status_code == 401


def test_user_controlled_text_cannot_send_terminal_escapes(authgear_server: ServerProcess) -> None:
    """Anyone can sign in from an app that reports its own device name (Authgear's native SDKs
    send ``x_device_info``); an escape sequence there must not reach the admin's terminal (it
    could clear the screen, hide rows or fake output). Emails with control characters are
    refused at sign-up already."""
    server = authgear_server
    email = new_email()
    cb, flow, browser = login(server, email, PASSWORD, signup=True)
    browser.close()
    info = {"ios": {"UIDevice": {"name": "\x1b[2J\x1b[1;1HEvil phone"}}}
    encoded = base64.urlsafe_b64encode(json.dumps(info).encode()).decode().rstrip("=")
    assert exchange(server, cb["code"], flow, x_device_info=encoded).status_code == 200
    uid = json.loads(ok(server, "users", "list", "--search", email, "--json"))[0]["id"]
    out = ok(server, "sessions", "list", uid)
    assert "\x1b" not in out
    assert "\\x1b[2J" in out and "Evil phone" in out
    hostile = "\x1b[2Jx" + new_email()
    refused = run(server, "users", "create", hostile, "--password-stdin", input=PASSWORD + "\n")
    assert refused.returncode == 1 and "\x1b" not in refused.stderr


def test_users_create_outside_admin_is_audited_too(authgear_server: ServerProcess) -> None:
    """`authgear users create --role admin` makes an administrator: the audit log shows who."""
    server = authgear_server
    email = new_email()
    uid = server.create_user(email, PASSWORD, "--role", "admin")
    key = ok(server, "keys", "create", "--name", "audit-reader").strip()
    r = httpx2.get(
        f"{server.url}/_api/admin/audit-log",
        params={"target_id": uid},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    entries = r.json()["entries"]
    assert [e["action"] for e in entries] == ["user.create"]
    assert entries[0]["actor"]["type"] == "cli"
    assert entries[0]["details"] == {"email": email, "roles": ["admin"]}
