"""Linked identities over HTTP (SQLite and PostgreSQL): /settings/security lists them, links one
through a settings flow and unlinks one (never the last way to sign in); the admin API, the
portal and the CLI show and unlink them; all in the audit log."""

from __future__ import annotations

import re
import subprocess
from urllib.parse import urljoin

import httpx2
from sso_support import (
    SsoServer,
    follow,
    new_login,
    sso_to_callback,
)

from agtest.pages import csrf_of
from agtest.server import AUTHGEAR, new_email
from agtest.upstream import click_provider, error_text, upstream_login

PASSWORD = "correct horse battery"


def upstream_user(sso: SsoServer, alias: str = "good") -> tuple[httpx2.Client, str, str]:
    """A user created by signing in with ``alias``, signed in at /settings/security."""
    c = sso.client()
    login = new_login()
    r = c.get(sso_to_callback(c, sso.url + "/login?next=/settings/security", alias, login))
    assert r.status_code == 303 and r.headers["location"] == "/settings/security"
    user_id = sso.identities(alias, login)[0][0]
    return c, user_id, login


def password_user(sso: SsoServer) -> tuple[httpx2.Client, str, str]:
    email = new_email()
    user_id = sso.server.create_user(email, PASSWORD)
    c = sso.client()
    page = c.get("/login?next=/settings/security")
    r = c.post(
        "/login?next=/settings/security",
        data={"csrf_token": csrf_of(page.text), "email": email, "password": PASSWORD},
    )
    assert r.headers["location"] == "/settings/security"
    return c, user_id, email


def security_form(c: httpx2.Client, action: str, **fields: str) -> httpx2.Response:
    page = c.get("/settings/security")
    return c.post(action, data={"csrf_token": csrf_of(page.text), **fields})


def unlink_path(page: str) -> list[str]:
    return re.findall(r'action="(/settings/security/identities/[^"]+/unlink)"', page)


def link_from_settings(c: httpx2.Client, sso: SsoServer, alias: str, login: str) -> httpx2.Response:
    r = security_form(c, "/settings/security/identities/link", provider=alias)
    assert r.status_code == 303, r.text[:300]
    step = urljoin(sso.url, r.headers["location"])
    assert "/flow/link_sso?" in step
    return c.get(upstream_login(c, click_provider(c, step, alias), login))


def test_upstream_only_user_sees_the_identity_and_cannot_unlink_the_last_way_in(
    sso: SsoServer,
) -> None:
    c, _user_id, login = upstream_user(sso)
    page = c.get("/settings/security")
    assert "Sign in with other accounts" in page.text and f"{login}@example.test" in page.text
    [path] = unlink_path(page.text)
    r = security_form(c, path)
    assert r.status_code == 409 and "only way to sign in" in error_text(r.text)
    assert len(sso.identities("good", login)) == 1


def test_link_from_settings_then_sign_in_with_it_then_unlink(sso: SsoServer) -> None:
    c, user_id, _email = password_user(sso)
    login = new_login()
    done = link_from_settings(c, sso, "other", login)
    assert done.headers["location"] == "/settings/security?done=link_identity"
    assert sso.identities("other", login)[0][0] == user_id
    # Linked by the user's session, not by email: the provider's email may differ.
    assert sso.identities("other", login)[0][1] == f"{login}@example.test"
    # It signs in to that account now.
    c2 = sso.client()
    r = c2.get(sso_to_callback(c2, sso.url + "/login?next=/settings", "other", login))
    assert r.headers["location"] == "/settings"
    # Unlink (the password remains).
    page = c.get("/settings/security?done=link_identity")
    assert "The account was linked." in page.text
    [path] = unlink_path(page.text)
    r = security_form(c, path)
    assert r.headers["location"] == "/settings/security?done=identity-unlinked"
    assert sso.identities("other", login) == []
    actions = [a for (a,) in sso.query("SELECT action FROM audit_log WHERE target_id = ?", user_id)]
    assert actions.count("identity.link") == 1 and actions.count("identity.unlink") == 1


def test_linking_a_provider_account_of_another_user_is_refused(sso: SsoServer) -> None:
    _c, owner_id, login = upstream_user(sso, "other")
    c, _user_id, _email = password_user(sso)
    r = link_from_settings(c, sso, "other", login)
    page = follow(c, r)
    assert "already linked to another account" in error_text(page.text)
    assert sso.identities("other", login)[0][0] == owner_id


def test_unlinking_another_users_identity_or_without_csrf_does_nothing(sso: SsoServer) -> None:
    victim, _victim_id, login = upstream_user(sso)
    path = unlink_path(victim.get("/settings/security").text)[0]
    attacker, _id, _email = password_user(sso)
    assert security_form(attacker, path).status_code == 404
    assert victim.post(path, data={}).status_code == 403
    assert len(sso.identities("good", login)) == 1


def test_admin_api_lists_and_unlinks_identities_last_one_only_with_force(sso: SsoServer) -> None:
    _c, user_id, login = upstream_user(sso)
    key = subprocess.run(
        [
            AUTHGEAR,
            "admin",
            "keys",
            "create",
            "--name",
            "sso",
            "--data-dir",
            str(sso.server.data_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    api = httpx2.Client(
        base_url=sso.url + "/_api/admin", headers={"Authorization": f"Bearer {key}"}
    )
    body = api.get(f"/users/{user_id}/identities").json()
    [identity] = body["identities"]
    assert identity["provider"] == "good" and identity["subject"] == login
    assert identity["provider_name"] == "Test IdP (good)" and identity["email_verified"] is True
    assert set(identity) >= {"created_at", "last_used_at", "email", "name", "id"}
    r = api.delete(f"/users/{user_id}/identities/{identity['id']}")
    assert r.status_code == 409 and r.json()["error"] == "last_sign_in_method"
    assert api.delete(f"/users/{user_id}/identities/nope").status_code == 404
    assert api.get("/users/nope/identities").status_code == 404
    assert api.delete(f"/users/{user_id}/identities/{identity['id']}?force=true").status_code == 204
    assert sso.identities("good", login) == []
    audit = sso.query(
        "SELECT action, actor_type FROM audit_log WHERE target_id = ? AND action = ?",
        user_id,
        "identity.unlink",
    )
    assert audit == [("identity.unlink", "api_key")]


def test_cli_lists_and_unlinks_identities(sso: SsoServer) -> None:
    _c, user_id, login = upstream_user(sso)
    _c2, _uid, _ = password_user(sso)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AUTHGEAR, "admin", "users", *args, "--data-dir", str(sso.server.data_dir)],
            capture_output=True,
            text=True,
        )

    shown = cli("identities", user_id)
    assert shown.returncode == 0 and f"{login}@example.test" in shown.stdout
    identity_id = re.search(r"good\s+(\S+)", shown.stdout).group(1)  # type: ignore[union-attr]
    refused = cli("unlink-identity", user_id, identity_id)
    assert refused.returncode != 0 and "last way" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert cli("unlink-identity", user_id, identity_id, "--force").returncode == 0
    assert sso.identities("good", login) == []


def test_portal_shows_linked_accounts_and_unlinks(sso: SsoServer) -> None:
    c, user_id, _email = password_user(sso)
    login = new_login()
    link_from_settings(c, sso, "other", login)
    admin_email = new_email()
    sso.server.create_user(admin_email, PASSWORD, "--role", "admin")
    admin, _aid, _ = (None, None, None)
    admin = sso.client()
    page = admin.get("/login?next=/portal")
    admin.post(
        "/login?next=/portal",
        data={"csrf_token": csrf_of(page.text), "email": admin_email, "password": PASSWORD},
    )
    user_page = admin.get(f"/portal/users/{user_id}")
    assert "Linked accounts" in user_page.text and f"{login}@example.test" in user_page.text
    link = re.search(r'href="(/portal/users/[^"]+/identities/[^"]+/unlink)"', user_page.text)
    assert link
    confirm = admin.get(link.group(1))
    assert "Unlink this account?" in confirm.text
    assert admin.post(link.group(1), data={}).status_code == 403  # no CSRF token
    done = admin.post(link.group(1), data={"csrf_token": csrf_of(confirm.text)})
    assert done.headers["location"].endswith("done=identity-unlinked")
    assert sso.identities("other", login) == []
