"""The admin API over HTTP: keys, users, sessions, the audit log, and every effect of a
revocation checked through the real endpoints (token, userinfo, resolver, authorize)."""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from agtest.server import (
    AUTHGEAR,
    NATIVE,
    Browser,
    Flow,
    ServerProcess,
    exchange,
    login,
    new_email,
    refresh,
)

PASSWORD = "correct horse battery"


def admin_cli(server: ServerProcess, *args: str, input: str | None = None) -> str:
    out = subprocess.run(
        [AUTHGEAR, "admin", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        input=input,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


class Admin:
    """An admin API client with its own key."""

    def __init__(self, server: ServerProcess, key: str) -> None:
        self.server = server
        self.key = key
        self.key_id = key.removeprefix("agk_").split(".")[0]
        self.http = httpx2.Client(
            base_url=server.url + "/_api/admin",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)


@pytest.fixture(scope="module")
def admin(authgear_server: ServerProcess) -> Iterator[Admin]:
    key = admin_cli(authgear_server, "keys", "create", "--name", "tests").strip()
    client = Admin(authgear_server, key)
    yield client
    client.http.close()


class Person:
    """A user signed in through the real pages: a browser (with the IdP session cookie) and
    an app's tokens (an offline grant)."""

    def __init__(self, server: ServerProcess, device_info: dict[str, Any] | None = None) -> None:
        self.server = server
        self.email = new_email()
        self.id = server.create_user(self.email, PASSWORD)
        extra = {}
        if device_info is not None:
            raw = json.dumps(device_info).encode()
            extra["x_device_info"] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        cb, flow, self.browser = login(server, self.email, PASSWORD)
        r = exchange(server, cb["code"], flow, **extra)
        assert r.status_code == 200, r.text
        self.tokens = r.json()

    def close(self) -> None:
        self.browser.close()

    # What each part of the system says about this person's credentials now.
    def refresh_ok(self) -> bool:
        r = refresh(self.server, self.tokens["refresh_token"])
        if r.status_code == 400:
            assert r.json()["error"] == "invalid_grant"
            return False
        assert r.status_code == 200, r.text
        # Public clients rotate refresh tokens: keep the new one, as an app would.
        self.tokens["refresh_token"] = r.json().get("refresh_token", self.tokens["refresh_token"])
        return True

    def userinfo_ok(self, token: str | None = None) -> bool:
        r = httpx2.get(
            self.server.url + "/oauth2/userinfo",
            headers={"Authorization": f"Bearer {token or self.tokens['access_token']}"},
        )
        assert r.status_code in (200, 401)
        if r.status_code == 401:
            assert r.json()["error"] == "invalid_grant"
        return r.status_code == 200

    def resolver_ok(self, token: str | None = None) -> bool:
        r = httpx2.get(
            self.server.url + "/_resolver/resolve",
            headers={"Authorization": f"Bearer {token or self.tokens['access_token']}"},
        )
        assert r.status_code == 200
        return r.headers["x-authgear-session-valid"] == "true"

    def cookie_resolver_ok(self) -> bool:
        r = self.browser.http.get("/_resolver/resolve")
        return r.headers.get("x-authgear-session-valid") == "true"

    def cookie_skips_login(self) -> bool:
        """A new authorize in the same browser: straight back to the app, or the login form?"""
        r = self.browser.authorize(**Flow.new().params())
        assert r.status_code == 303
        return not r.headers["location"].startswith("/login")

    def idp_access_token(self) -> str:
        """An access token of the browser session (no offline_access: no grant)."""
        flow = Flow.new()
        r = self.browser.authorize(**flow.params(scope="openid"))
        assert r.status_code == 303 and not r.headers["location"].startswith("/login")
        code = dict(httpx2.URL(r.headers["location"]).params)["code"]
        t = exchange(self.server, code, flow)
        assert t.status_code == 200, t.text
        return str(t.json()["access_token"])


@pytest.fixture
def person(authgear_server: ServerProcess) -> Iterator[Person]:
    p = Person(authgear_server)
    yield p
    p.close()


def _sqlite(server: ServerProcess) -> sqlite3.Connection | None:
    if "database_url" in server.config:
        return None
    return sqlite3.connect(server.data_dir / "authgear.db")


# -- authorization --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer agk_0000000000000000.nope",
        "Bearer agk_.x",
        "Bearer not-a-key",
        "Bearer " + "a" * 500,
    ],
)
def test_requests_without_a_valid_key_get_401(
    authgear_server: ServerProcess, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [
        ("GET", "/users"),
        ("POST", "/users"),
        ("DELETE", "/sessions/x"),
        ("GET", "/audit-log"),
    ]:
        r = httpx2.request(
            method, authgear_server.url + "/_api/admin" + path, headers=headers, json={}
        )
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_wrong_secret_for_a_real_key_id_and_revoked_key(
    authgear_server: ServerProcess, admin: Admin
) -> None:
    key = admin_cli(authgear_server, "keys", "create", "--name", "short-lived").strip()
    key_id = key.removeprefix("agk_").split(".")[0]
    url = authgear_server.url + "/_api/admin/users?limit=1"
    assert httpx2.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    wrong = f"agk_{key_id}.{secrets.token_urlsafe(32)}"
    assert httpx2.get(url, headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    # lower-case scheme is fine (RFC 7235)
    assert httpx2.get(url, headers={"Authorization": f"bearer {key}"}).status_code == 200

    listed = admin_cli(authgear_server, "keys", "list")
    assert key_id in listed and "short-lived" in listed
    assert key.split(".")[1] not in listed  # the secret is never shown again
    admin_cli(authgear_server, "keys", "revoke", key_id)
    assert httpx2.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert "revoked" in admin_cli(authgear_server, "keys", "list")
    # the other key still works
    assert admin.get("/users?limit=1").status_code == 200


def test_keys_are_stored_hashed(authgear_server: ServerProcess, admin: Admin) -> None:
    db = _sqlite(authgear_server)
    if db is None:
        pytest.skip("checked on SQLite")
    with db:
        rows = db.execute("SELECT id, secret_hash FROM admin_api_keys").fetchall()
    secret = admin.key.split(".", 1)[1]
    assert (admin.key_id,) in [(r[0],) for r in rows]
    stored = dict(rows)[admin.key_id]
    assert secret not in stored and len(stored) == 64
    assert admin.key not in authgear_server.log()


def test_openapi_document(authgear_server: ServerProcess) -> None:
    r = httpx2.get(authgear_server.url + "/_api/admin/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["servers"] == [{"url": "/_api/admin"}]
    paths = doc["paths"]
    assert {"get", "post"} <= set(paths["/users"])
    assert {"get", "delete"} <= set(paths["/users/{user_id}"])
    assert {"get", "delete"} <= set(paths["/users/{user_id}/sessions"])
    assert "delete" in paths["/sessions/{session_id}"]
    assert "get" in paths["/audit-log"]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


# -- users ----------------------------------------------------------------------------------


def test_create_get_roles_disable_enable_delete(admin: Admin) -> None:
    email = new_email()
    r = admin.post("/users", json={"email": email.upper(), "password": PASSWORD, "roles": ["a"]})
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["email"] == email.upper() and user["roles"] == ["a"] and not user["disabled"]
    uid = user["id"]

    assert admin.post("/users", json={"email": email, "password": PASSWORD}).status_code == 409
    bad = admin.post("/users", json={"email": "not-an-email", "password": PASSWORD})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"
    assert admin.post("/users", json={"email": new_email(), "password": "short"}).status_code == 400
    assert (
        admin.post("/users", json={"email": new_email(), "roles": ["no spaces"]}).status_code == 422
    )
    assert admin.post("/users", json={"email": new_email(), "extra": 1}).status_code == 422
    # without a password: an account that cannot sign in with one
    nopw = admin.post("/users", json={"email": new_email()})
    assert nopw.status_code == 201

    assert admin.get(f"/users/{uid}").json() == user
    assert admin.get("/users/no-such-user").status_code == 404

    r = admin.put(f"/users/{uid}/roles", json={"roles": ["admin", "editor", "admin"]})
    assert r.status_code == 200 and r.json()["roles"] == ["admin", "editor"]
    assert admin.put("/users/nobody/roles", json={"roles": []}).status_code == 404

    assert admin.post(f"/users/{uid}/disable").json()["disabled"] is True
    assert admin.get(f"/users/{uid}").json()["disabled"] is True
    assert admin.post(f"/users/{uid}/enable").json()["disabled"] is False
    assert admin.post("/users/nobody/disable").status_code == 404

    assert admin.delete(f"/users/{uid}").status_code == 204
    assert admin.get(f"/users/{uid}").status_code == 404
    assert admin.delete(f"/users/{uid}").status_code == 404


def test_created_user_signs_in_with_roles_in_tokens(
    authgear_server: ServerProcess, admin: Admin
) -> None:
    email = new_email()
    uid = admin.post(
        "/users", json={"email": email, "password": PASSWORD, "roles": ["support"]}
    ).json()["id"]
    cb, flow, browser = login(authgear_server, email, PASSWORD)
    browser.close()
    tokens = exchange(authgear_server, cb["code"], flow).json()
    r = httpx2.get(
        authgear_server.url + "/_resolver/resolve",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert r.headers["x-authgear-user-id"] == uid
    assert r.headers["x-authgear-user-roles"] == "support"
    # roles changed by an admin show at the resolver at once (it reads the user each time)
    admin.put(f"/users/{uid}/roles", json={"roles": ["support", "billing"]})
    r = httpx2.get(
        authgear_server.url + "/_resolver/resolve",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert r.headers["x-authgear-user-roles"] == "support,billing"


def test_search_and_pagination_are_stable(admin: Admin) -> None:
    marker = f"page{secrets.token_hex(4)}"
    emails = sorted(f"{marker}-{i:02d}@example.com" for i in range(7))
    for e in reversed(emails):
        assert admin.post("/users", json={"email": e}).status_code == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"q": marker.upper(), "limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = admin.get("/users", params=params).json()
        seen += [u["email"] for u in body["users"]]
        cursor = body["next_cursor"]
        pages += 1
        if cursor is None:
            break
    assert seen == emails and pages == 3
    # a user id matches too; wildcards in the query are literal
    one = admin.get("/users", params={"q": emails[0]}).json()["users"][0]
    assert admin.get("/users", params={"q": one["id"]}).json()["users"] == [one]
    assert admin.get("/users", params={"q": f"{marker}%"}).json()["users"] == []
    assert admin.get("/users", params={"q": f"{marker}_0"}).json()["users"] == []
    assert admin.get("/users", params={"cursor": "!!!"}).status_code == 400
    assert admin.get("/users", params={"limit": 0}).status_code == 422
    assert admin.get("/users", params={"limit": 201}).status_code == 422


# -- sessions -------------------------------------------------------------------------------


def test_list_sessions_shows_both_kinds_with_details(
    authgear_server: ServerProcess, admin: Admin
) -> None:
    device = {
        "ios": {"UIDevice": {"name": "Ada's iPhone", "systemName": "iOS", "systemVersion": "18.1"}}
    }
    p = Person(authgear_server, device_info=device)
    try:
        sessions = admin.get(f"/users/{p.id}/sessions").json()["sessions"]
        kinds = sorted(s["kind"] for s in sessions)
        assert kinds == ["idp_session", "offline_grant"]
        grant = next(s for s in sessions if s["kind"] == "offline_grant")
        idp = next(s for s in sessions if s["kind"] == "idp_session")
        assert grant["client_id"] == NATIVE and grant["client_name"] == "Native test app"
        assert grant["idp_session_id"] == idp["id"]
        assert grant["device_info"] == device
        assert grant["display_name"] == "Ada's iPhone (iOS 18.1)"
        assert "offline_access" in grant["scopes"]
        for s in sessions:
            assert s["user_id"] == p.id
            assert s["amr"] == ["pwd", "x_primary_password"]
            assert s["created_at"] <= s["last_access"]["time"] < s["expires_at"]
            assert s["authenticated_at"] > 0
            assert s["last_access"]["ip"] == "127.0.0.1"
            assert "httpx" in s["last_access"]["user_agent"]
        assert admin.get(f"/sessions/{grant['id']}").json() == grant
        assert admin.get("/sessions/nope").status_code == 404
        assert admin.get("/users/nobody/sessions").status_code == 404
    finally:
        p.close()


def test_revoking_an_app_session_ends_it_everywhere(
    authgear_server: ServerProcess, admin: Admin, person: Person
) -> None:
    assert person.refresh_ok() and person.userinfo_ok() and person.resolver_ok()
    # a refreshed access token too
    second = refresh(authgear_server, person.tokens["refresh_token"]).json()["access_token"]
    grant = next(
        s
        for s in admin.get(f"/users/{person.id}/sessions").json()["sessions"]
        if s["kind"] == "offline_grant"
    )
    assert admin.delete(f"/sessions/{grant['id']}").status_code == 204
    assert not person.refresh_ok()
    for token in (person.tokens["access_token"], second):
        assert not person.userinfo_ok(token)
        assert not person.resolver_ok(token)
    assert admin.delete(f"/sessions/{grant['id']}").status_code == 404
    # the browser session is a session of its own and goes on
    assert person.cookie_skips_login() and person.cookie_resolver_ok()
    kinds = [s["kind"] for s in admin.get(f"/users/{person.id}/sessions").json()["sessions"]]
    assert kinds == ["idp_session"]


def test_revoking_a_browser_session_ends_its_cookie_and_tokens(
    authgear_server: ServerProcess, admin: Admin, person: Person
) -> None:
    browser_token = person.idp_access_token()
    assert person.userinfo_ok(browser_token) and person.cookie_skips_login()
    idp = next(
        s
        for s in admin.get(f"/users/{person.id}/sessions").json()["sessions"]
        if s["kind"] == "idp_session"
    )
    # a code issued under the session but not yet exchanged dies with it
    flow = Flow.new()
    r = person.browser.authorize(**flow.params())
    pending = dict(httpx2.URL(r.headers["location"]).params)["code"]

    assert admin.delete(f"/sessions/{idp['id']}").status_code == 204
    assert not person.cookie_skips_login()
    assert not person.cookie_resolver_ok()
    assert not person.userinfo_ok(browser_token) and not person.resolver_ok(browser_token)
    r = exchange(authgear_server, pending, flow)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # the app's grant is its own session (listed and revoked separately)
    assert person.refresh_ok()


def test_revoke_all_ends_every_session(
    authgear_server: ServerProcess, admin: Admin, person: Person
) -> None:
    browser_token = person.idp_access_token()
    other = Browser(authgear_server.url)  # a second browser, a second IdP session
    try:
        login(authgear_server, person.email, PASSWORD, browser=other)
        assert len(admin.get(f"/users/{person.id}/sessions").json()["sessions"]) == 3
        r = admin.delete(f"/users/{person.id}/sessions")
        assert r.status_code == 200 and r.json() == {"revoked": 3}
        assert admin.get(f"/users/{person.id}/sessions").json() == {
            "sessions": [],
            "next_cursor": None,
        }
        assert not person.refresh_ok()
        assert not person.userinfo_ok() and not person.resolver_ok()
        assert not person.userinfo_ok(browser_token)
        assert not person.cookie_skips_login() and not person.cookie_resolver_ok()
        assert other.http.get("/_resolver/resolve").headers["x-authgear-session-valid"] == "false"
        # the user can sign in again: a new session
        again, flow, b = login(authgear_server, person.email, PASSWORD)
        b.close()
        assert exchange(authgear_server, again["code"], flow).status_code == 200
    finally:
        other.close()
    assert admin.delete("/users/nobody/sessions").status_code == 404


def test_disabled_user_is_refused_everywhere_until_enabled(
    authgear_server: ServerProcess, admin: Admin, person: Person
) -> None:
    browser_token = person.idp_access_token()
    admin.post(f"/users/{person.id}/disable")
    assert not person.refresh_ok()
    assert not person.userinfo_ok() and not person.resolver_ok()
    assert not person.userinfo_ok(browser_token) and not person.resolver_ok(browser_token)
    assert not person.cookie_skips_login() and not person.cookie_resolver_ok()
    # the login form refuses the right password, with the same message as a wrong one
    fresh = Browser(authgear_server.url)
    try:
        r = fresh.submit("/login", person.email, PASSWORD)
        assert r.status_code == 401 and "Incorrect email or password" in r.text
    finally:
        fresh.close()
    # a code obtained before the disable cannot be exchanged
    admin.post(f"/users/{person.id}/enable")
    flow = Flow.new()
    r = person.browser.authorize(**flow.params())
    code = dict(httpx2.URL(r.headers["location"]).params)["code"]
    admin.post(f"/users/{person.id}/disable")
    assert exchange(authgear_server, code, flow).json()["error"] == "invalid_grant"

    admin.post(f"/users/{person.id}/enable")
    assert person.refresh_ok() and person.userinfo_ok() and person.cookie_skips_login()


def test_deleted_user_loses_everything_in_one_go(
    authgear_server: ServerProcess, admin: Admin, person: Person
) -> None:
    browser_token = person.idp_access_token()
    flow = Flow.new()
    r = person.browser.authorize(**flow.params())
    code = dict(httpx2.URL(r.headers["location"]).params)["code"]
    assert admin.delete(f"/users/{person.id}").status_code == 204
    assert not person.refresh_ok()
    assert not person.userinfo_ok() and not person.resolver_ok()
    assert not person.userinfo_ok(browser_token)
    assert not person.cookie_skips_login() and not person.cookie_resolver_ok()
    assert exchange(authgear_server, code, flow).json()["error"] == "invalid_grant"
    db = _sqlite(authgear_server)
    if db is not None:
        with db:
            for table in ("access_tokens", "offline_grants", "idp_sessions", "auth_codes"):
                n = db.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id = ?", (person.id,))
                assert n.fetchone()[0] == 0, table


# -- audit log ------------------------------------------------------------------------------


def test_audit_log_records_who_what_when_target(admin: Admin, person: Person) -> None:
    admin.post(f"/users/{person.id}/disable")
    admin.post(f"/users/{person.id}/enable")
    admin.put(f"/users/{person.id}/roles", json={"roles": ["x"]})
    admin.delete(f"/users/{person.id}/sessions")
    admin.delete("/sessions/does-not-exist")  # nothing happened: nothing recorded
    body = admin.get("/audit-log", params={"target_id": person.id}).json()
    actions = [e["action"] for e in body["entries"]]
    assert actions == [
        "session.revoke_all",
        "user.set_roles",
        "user.enable",
        "user.disable",
        "user.create",  # by `authgear users create`, which made the person
    ]
    assert body["entries"][4]["actor"]["type"] == "cli"
    for e in body["entries"][:4]:
        assert e["actor"] == {"type": "api_key", "id": admin.key_id, "label": "tests"}
        assert e["target"] == {"type": "user", "id": person.id}
        assert e["ip"] == "127.0.0.1" and e["at"] > 0
    assert body["entries"][1]["details"] == {"email": person.email, "before": [], "after": ["x"]}
    assert body["entries"][0]["details"]["revoked"] == 2

    # paging through the whole log, newest first, no repeats
    ids: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = admin.get("/audit-log", params=params).json()
        ids += [e["id"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == sorted(ids, reverse=True) and len(ids) == len(set(ids)) >= 4
    only = admin.get("/audit-log", params={"action": "user.enable", "actor_id": admin.key_id})
    assert {e["action"] for e in only.json()["entries"]} == {"user.enable"}
