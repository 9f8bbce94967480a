"""Administrators and authenticators over real HTTP and the real CLI (SQLite and PostgreSQL):
see a user's sign-in methods (never a secret), reset their second factor, remove a passkey;
the admin API, the portal and `authgear admin users ...`, each in the audit log."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from agtest.mfa import (
    answer_totp,
    authenticator_rows,
    csrf_of,
    enrol_totp,
    finish_login,
    location,
    register_passkey,
    signed_in_browser,
    start_login,
    step_of,
)
from agtest.server import AUTHGEAR, ServerProcess, free_port, new_email, server_config
from agtest.softauthn import SoftAuthenticator

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    port = free_port()
    config = server_config(port, public_origin=f"http://localhost:{port}")
    if request.param == "postgresql":
        config["database_url"] = request.getfixturevalue("postgres").create_database(
            f"ag_{secrets.token_hex(6)}"
        )
    process = ServerProcess(tmp_path_factory.mktemp("admin-authn"), port, config)
    process.start()
    yield process
    process.stop()


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUTHGEAR, "admin", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[httpx2.Client]:
    key = cli(server, "keys", "create", "--name", "authn-tests").stdout.strip()
    client = httpx2.Client(
        base_url=server.url + "/_api/admin", headers={"Authorization": f"Bearer {key}"}
    )
    yield client
    client.close()


def full_user(server: ServerProcess) -> dict[str, Any]:
    """A user with an authenticator app, recovery codes, a trusted browser and a passkey."""
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    browser = signed_in_browser(server, email, PASSWORD)
    secret, codes = enrol_totp(browser)
    soft = SoftAuthenticator(f"http://localhost:{server.port}")
    assert location(register_passkey(browser, soft)) == "/settings/security?done=add_passkey"
    browser.close()
    r, flow, b2 = start_login(server, email, PASSWORD)
    finish_login(server, answer_totp(b2, r, secret, trust_device="on"), flow)
    b2.close()
    return {"email": email, "id": user_id, "secret": secret, "codes": codes, "soft": soft}


def audit_actions(server: ServerProcess, user_id: str) -> list[str]:
    rows = server.query("SELECT action FROM audit_log WHERE target_id = ? ORDER BY id", user_id)
    return [r[0] for r in rows]


def test_admin_api_lists_authenticators_without_secrets(
    server: ServerProcess, api: httpx2.Client
) -> None:
    user = full_user(server)
    r = api.get(f"/users/{user['id']}/authenticators")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["password"] is True and body["trusted_devices"] == 1
    assert body["recovery_codes"] == {"total": 10, "unused": 10}
    kinds = sorted(a["kind"] for a in body["authenticators"])
    assert kinds == ["passkey", "totp"]
    passkey = next(a for a in body["authenticators"] if a["kind"] == "passkey")
    assert passkey["label"] == "Test key" and passkey["created_at"] > 0
    totp = next(a for a in body["authenticators"] if a["kind"] == "totp")
    assert totp["last_used_at"] is not None
    # Nothing secret leaves: not the TOTP key, not a code, not a public key or credential id.
    text = r.text
    stored = server.query(
        "SELECT secret, public_key, credential_id FROM authenticators WHERE user_id = ?",
        user["id"],
    )
    for row in stored:
        for value in row:
            if value:
                assert str(value) not in text
    assert user["secret"] not in text
    assert not any(c.replace("-", "") in text for c in user["codes"])
    assert api.get("/users/nobody/authenticators").status_code == 404
    assert (
        httpx2.get(server.url + f"/_api/admin/users/{user['id']}/authenticators").status_code == 401
    )


def test_admin_api_reset_mfa_then_the_user_signs_in_with_the_password_alone(
    server: ServerProcess, api: httpx2.Client
) -> None:
    user = full_user(server)
    r = api.post(f"/users/{user['id']}/reset-mfa")
    assert r.status_code == 200 and r.json() == {
        "totp": 1,
        "recovery_codes": 10,
        "trusted_devices": 1,
    }
    assert [row[0] for row in authenticator_rows(server, user["id"])] == ["passkey"]
    signed, flow, browser = start_login(server, user["email"], PASSWORD)
    assert signed.headers["location"].startswith("http://127.0.0.1:5555/")
    finish_login(server, signed, flow)
    browser.close()
    assert audit_actions(server, user["id"])[-1] == "user.reset_mfa"
    entry = server.query(
        "SELECT actor_type, CAST(details AS TEXT) FROM audit_log WHERE target_id = ? "
        "AND action = 'user.reset_mfa'",
        user["id"],
    )
    assert entry[0][0] == "api_key" and json.loads(entry[0][1])["totp"] == 1
    assert api.post("/users/nobody/reset-mfa").status_code == 404


def test_admin_api_removes_a_passkey_only_of_that_user(
    server: ServerProcess, api: httpx2.Client
) -> None:
    alice, bob = full_user(server), full_user(server)
    bobs = api.get(f"/users/{bob['id']}/authenticators").json()["authenticators"]
    bob_passkey = next(a["id"] for a in bobs if a["kind"] == "passkey")
    # Bob's passkey through Alice's user id: not found, nothing removed.
    assert api.delete(f"/users/{alice['id']}/passkeys/{bob_passkey}").status_code == 404
    assert "passkey" in [r[0] for r in authenticator_rows(server, bob["id"])]
    assert api.delete(f"/users/{bob['id']}/passkeys/{bob_passkey}").status_code == 204
    assert "passkey" not in [r[0] for r in authenticator_rows(server, bob["id"])]
    assert audit_actions(server, bob["id"])[-1] == "passkey.remove"
    # A TOTP authenticator is not a passkey.
    totp = next(
        a["id"]
        for a in api.get(f"/users/{bob['id']}/authenticators").json()["authenticators"]
        if a["kind"] == "totp"
    )
    assert api.delete(f"/users/{bob['id']}/passkeys/{totp}").status_code == 404


def test_cli_lists_resets_and_removes(server: ServerProcess) -> None:
    user = full_user(server)
    shown = cli(server, "users", "authenticators", user["email"])
    assert shown.returncode == 0, shown.stderr
    assert "recovery codes: 10 of 10 unused" in shown.stdout
    assert "trusted browsers: 1" in shown.stdout and "passkey" in shown.stdout
    assert user["secret"] not in shown.stdout
    as_json = json.loads(cli(server, "users", "authenticators", user["id"], "--json").stdout)
    passkey = next(a["id"] for a in as_json["authenticators"] if a["kind"] == "passkey")
    refused = cli(server, "users", "reset-mfa", user["email"])
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert len(authenticator_rows(server, user["id"])) == 12
    reset = cli(server, "users", "reset-mfa", user["email"], "--yes")
    assert reset.returncode == 0 and "1 authenticator app" in reset.stdout
    missing = cli(server, "users", "remove-passkey", user["email"], "no-such-id")
    assert missing.returncode == 1 and missing.stderr.startswith("authgear: ")
    removed = cli(server, "users", "remove-passkey", user["email"], passkey)
    assert removed.returncode == 0, removed.stderr
    assert authenticator_rows(server, user["id"]) == []
    actors = server.query(
        "SELECT action, actor_type FROM audit_log WHERE target_id = ? AND actor_type = 'cli'",
        user["id"],
    )
    assert actors == [("user.create", "cli"), ("user.reset_mfa", "cli"), ("passkey.remove", "cli")]


def test_portal_shows_sign_in_methods_and_resets_the_second_factor(
    server: ServerProcess,
) -> None:
    user = full_user(server)
    admin_email = new_email()
    server.create_user(admin_email, PASSWORD, "--role", "admin")
    browser = signed_in_browser(server, admin_email, PASSWORD)
    page = browser.http.get(f"/portal/users/{user['id']}")
    assert page.status_code == 200
    assert "Authenticator app (TOTP)" in page.text and "Passkey: Test key" in page.text
    assert "10 of 10 unused" in page.text
    confirm = browser.http.get(f"/portal/users/{user['id']}/reset-mfa")
    assert confirm.status_code == 200 and "Reset second factor" in confirm.text
    done = browser.http.post(
        f"/portal/users/{user['id']}/reset-mfa", data={"csrf_token": csrf_of(confirm)}
    )
    assert location(done).endswith("done=mfa-reset")
    passkey_link = re.search(
        r'href="(/portal/users/[^"]+/passkeys/[^"]+/remove)"', browser.http.get(location(done)).text
    )
    assert passkey_link
    confirm2 = browser.http.get(passkey_link.group(1))
    removed = browser.http.post(passkey_link.group(1), data={"csrf_token": csrf_of(confirm2)})
    assert location(removed).endswith("done=passkey-removed")
    assert authenticator_rows(server, user["id"]) == []
    assert audit_actions(server, user["id"])[-2:] == ["user.reset_mfa", "passkey.remove"]
    # A CSRF-less POST does nothing.
    other = full_user(server)
    forged = browser.http.post(f"/portal/users/{other['id']}/reset-mfa", data={})
    assert forged.status_code == 403
    assert len(authenticator_rows(server, other["id"])) == 12
    browser.close()


def test_required_mode_user_enrols_again_after_a_reset(server: ServerProcess) -> None:
    """The reset is what a user who lost their phone needs: with mode required (here: an
    app's acr demand) they set up a new authenticator at their next sign-in."""
    user = full_user(server)
    assert cli(server, "users", "reset-mfa", user["id"], "--yes").returncode == 0
    r, _, browser = start_login(
        server,
        user["email"],
        PASSWORD,
        acr_values="http://schemas.openid.net/pape/policies/2007/06/multi-factor",
    )
    assert step_of(r) == "enroll_totp"
    browser.close()
