"""The seed's story against our own Authgear-compatible server (tests/conftest.py's
``authgear_server``): sync and async, userinfo claims, rotation, revocation, single flight."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest

from authgear import (
    AsyncAuthgear,
    Authgear,
    OAuthError,
    SessionState,
    SessionStateChangeReason,
)
from authgear.client import FileTokenStorage

agtest = pytest.importorskip("agtest.server")

PASSWORD = "correct horse battery staple"


def user(server: object) -> str:
    email = agtest.new_email()
    server.create_user(email, PASSWORD)  # type: ignore[attr-defined]
    return email


def browser_login(server: object, authorize_url: str, email: str) -> str:
    browser = agtest.Browser(server.url)  # type: ignore[attr-defined]
    try:
        r = browser.http.get(authorize_url)
        assert r.status_code == 303, r.text[:300]
        location = r.headers["location"]
        if location.startswith("/"):
            r = browser.submit(location, email, PASSWORD)
        assert r.status_code == 303, r.text[:300]
        return str(r.headers["location"])
    finally:
        browser.close()


def signed_in(server: object, tmp_path: Path, client_id: str = agtest.NATIVE) -> Authgear:
    ag = Authgear(client_id, server.url, token_storage=FileTokenStorage(tmp_path))  # type: ignore[attr-defined]
    ag.configure()
    email = user(server)
    url = ag.make_authorize_url(agtest.NATIVE_REDIRECT)
    ag.finish_authentication(browser_login(server, url, email))
    return ag


def test_seed_story_against_our_server(authgear_server: object, tmp_path: Path) -> None:
    events: list[SessionStateChangeReason] = []
    ag = Authgear(agtest.NATIVE, authgear_server.url, token_storage=FileTokenStorage(tmp_path))  # type: ignore[attr-defined]
    ag.on_session_state_change(lambda c: events.append(c.reason))
    ag.configure()
    assert ag.session_state is SessionState.NO_SESSION

    email = user(authgear_server)
    url = ag.make_authorize_url(agtest.NATIVE_REDIRECT, page="login", login_hint=email)
    result = ag.finish_authentication(browser_login(authgear_server, url, email))
    assert ag.session_state is SessionState.AUTHENTICATED

    info = ag.fetch_user_info()
    assert info.sub == result.sub
    assert info.email == email
    assert info.raw.get("https://authgear.com/claims/user/is_anonymous") is False

    # public clients rotate by default (RFC 9700 §4.14.2): the SDK stores the new refresh token
    rt = ag.token_storage.load(ag.storage_key).refresh_token  # type: ignore[union-attr]
    old = ag.access_token
    assert ag.refresh_access_token() not in (None, old)
    assert ag.token_storage.load(ag.storage_key).refresh_token not in (None, rt)  # type: ignore[union-attr]

    # the resolver accepts the SDK's token (what a backend behind nginx would see)
    r = ag.fetch("GET", authgear_server.url + "/_resolver/resolve")  # type: ignore[attr-defined]
    assert r.headers.get("x-authgear-session-valid") == "true"
    assert r.headers.get("x-authgear-user-id") == info.sub

    ag.logout()
    assert ag.session_state_reason is SessionStateChangeReason.LOGOUT
    # the revoked token is refused at userinfo: 401 invalid_grant
    r = httpx2.get(
        authgear_server.url + "/oauth2/userinfo",  # type: ignore[attr-defined]
        headers={"authorization": f"Bearer {old}"},
    )
    assert r.status_code == 401
    assert events == [
        SessionStateChangeReason.NO_TOKEN,
        SessionStateChangeReason.AUTHENTICATED,
        SessionStateChangeReason.LOGOUT,
    ]


def test_revoked_refresh_token_gives_invalid(authgear_server: object, tmp_path: Path) -> None:
    ag = signed_in(authgear_server, tmp_path / "a")
    stale = ag.token_storage.load(ag.storage_key)
    assert stale is not None
    ag.logout()
    other_store = FileTokenStorage(tmp_path / "b")
    ghost = Authgear(agtest.NATIVE, authgear_server.url, token_storage=other_store)  # type: ignore[attr-defined]
    other_store.save(
        ghost.storage_key, dataclasses.replace(stale, refresh_after=0.0, expires_at=0.0)
    )
    ghost.configure()
    assert ghost.refresh_access_token_if_needed() is None
    assert ghost.session_state_reason is SessionStateChangeReason.INVALID
    with pytest.raises(OAuthError):
        ghost.fetch_user_info()


def test_threads_single_flight_with_rotation(authgear_server: object, tmp_path: Path) -> None:
    ag = signed_in(authgear_server, tmp_path, agtest.ROTATING)
    record = ag.token_storage.load(ag.storage_key)
    assert record is not None
    ag.token_storage.save(ag.storage_key, dataclasses.replace(record, refresh_after=0.0))
    ag2 = Authgear(agtest.ROTATING, authgear_server.url, token_storage=FileTokenStorage(tmp_path))  # type: ignore[attr-defined]
    ag2.configure()
    barrier = threading.Barrier(16)

    def call() -> str | None:
        barrier.wait()
        return ag2.refresh_access_token_if_needed()

    with ThreadPoolExecutor(16) as pool:
        tokens = set(pool.map(lambda _: call(), range(16)))
    assert len(tokens) == 1 and None not in tokens
    after = ag2.token_storage.load(ag2.storage_key)
    assert after is not None and after.refresh_token != record.refresh_token
    # the old refresh token would now be reuse; the SDK still works with the new one
    assert ag2.fetch_user_info().sub


async def test_async_story_against_our_server(authgear_server: object, tmp_path: Path) -> None:
    ag = AsyncAuthgear(
        agtest.NATIVE,
        authgear_server.url,  # type: ignore[attr-defined]
        token_storage=FileTokenStorage(tmp_path),
    )
    await ag.configure()
    email = user(authgear_server)
    url = await ag.make_authorize_url(agtest.NATIVE_REDIRECT)
    callback = await asyncio.to_thread(browser_login, authgear_server, url, email)
    await ag.finish_authentication(callback)
    info = await ag.fetch_user_info()
    assert info.email == email
    tokens = await asyncio.gather(*(ag.refresh_access_token() for _ in range(50)))
    assert len(set(tokens)) == 1
    await ag.clear_session_state()
    assert ag.session_state_reason is SessionStateChangeReason.CLEAR
    await ag.aclose()


class _FailingSaves(FileTokenStorage):
    """A user's storage whose disk fills up: saves fail while ``full`` is set."""

    full = False

    def save(self, name: str, record: object) -> None:  # type: ignore[override]
        if self.full:
            raise OSError(28, "No space left on device")
        super().save(name, record)  # type: ignore[arg-type]


def test_rotated_token_survives_a_failed_store_write(
    authgear_server: object, tmp_path: Path
) -> None:
    storage = _FailingSaves(tmp_path)
    ag = Authgear(agtest.ROTATING, authgear_server.url, token_storage=storage)  # type: ignore[attr-defined]
    ag.configure()
    url = ag.make_authorize_url(agtest.NATIVE_REDIRECT)
    ag.finish_authentication(browser_login(authgear_server, url, user(authgear_server)))
    storage.full = True
    with pytest.raises(OSError):
        ag.refresh_access_token()  # the server rotated; only the save failed
    storage.full = False
    # Past the server's grace period (2 s in the test config, counted in whole seconds),
    # reusing the old refresh token would revoke the grant: the SDK must use the rotated one it
    # kept in memory.
    import time

    time.sleep(3.2)
    assert ag.refresh_access_token()
    assert ag.session_state is SessionState.AUTHENTICATED
    assert ag.fetch_user_info().sub


def test_callback_without_iss_is_refused(authgear_server: object, tmp_path: Path) -> None:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    from authgear import AuthgearError

    ag = Authgear(agtest.NATIVE, authgear_server.url, token_storage=FileTokenStorage(tmp_path))  # type: ignore[attr-defined]
    ag.configure()
    url = ag.make_authorize_url(agtest.NATIVE_REDIRECT)
    callback = urlsplit(browser_login(authgear_server, url, user(authgear_server)))
    params = [(k, v) for k, v in parse_qsl(callback.query) if k != "iss"]
    stripped = urlunsplit(callback._replace(query=urlencode(params)))
    # Our server advertises RFC 9207 `iss`: a response without it is a possible mix-up.
    with pytest.raises(AuthgearError, match="RFC 9207"):
        ag.finish_authentication(stripped)
    assert ag.session_state is SessionState.NO_SESSION


def test_same_name_on_a_second_server_never_receives_the_first_servers_tokens(
    authgear_server: object, tmp_path: Path
) -> None:
    """Issue 17.1's attack: one token folder, one session name, two issuers. Server 2 (a real
    HTTP server that records everything) must never see a token of server 1, even through a
    session stored by an earlier version under the bare name, and server 1's session must
    come out untouched."""
    import json

    from client_support import Reply, ScriptedServer, discovery

    storage = FileTokenStorage(tmp_path)
    server1 = authgear_server.url  # type: ignore[attr-defined]
    ag1 = Authgear(agtest.NATIVE, server1, name="mix", token_storage=storage)
    ag1.configure()
    url = ag1.make_authorize_url(agtest.NATIVE_REDIRECT)
    ag1.finish_authentication(browser_login(authgear_server, url, user(authgear_server)))
    record1 = storage.load(ag1.storage_key)
    assert record1 is not None and record1.id_token and record1.access_token
    # the same session as an earlier version stored it, under the bare name
    storage.save("mix", dataclasses.replace(record1, endpoint=None, client_id=None))
    secrets = [record1.refresh_token, record1.access_token, record1.id_token]

    server2 = ScriptedServer()
    server2.routes["/.well-known/openid-configuration"] = lambda s: Reply(
        200, discovery(server2.url)
    )
    for path in ("/oauth2/token", "/oauth2/revoke", "/oauth2/userinfo", "/api"):
        server2.routes[path] = lambda s: Reply(401, {"error": "invalid_token"})
    try:
        ag2 = Authgear(agtest.NATIVE, server2.url, name="mix", token_storage=storage)
        ag2.configure()
        assert ag2.session_state is SessionState.NO_SESSION
        assert ag2.refresh_access_token_if_needed() is None
        assert ag2.refresh_access_token() is None
        assert ag2.fetch("GET", server2.url + "/api").status_code == 401
        with pytest.raises(OAuthError):
            ag2.fetch_user_info()
        ag2.logout()
        ag2.clear_session_state()
        seen = list(server2.seen)
    finally:
        server2.close()

    assert [s.path for s in seen] == [
        "/api",
        "/.well-known/openid-configuration",
        "/oauth2/userinfo",
    ]
    for s in seen:
        wire = json.dumps(s.headers) + s.body.decode() + json.dumps(s.query)
        assert not any(secret in wire for secret in secrets), s.path
        assert "authorization" not in s.headers
    assert storage.load(ag1.storage_key) == record1  # untouched
    assert storage.load("mix") is not None  # the old copy, not server 2's to move or delete
    again = Authgear(agtest.NATIVE, server1, name="mix", token_storage=storage)
    again.configure()
    assert again.session_state is SessionState.AUTHENTICATED
    assert again.fetch_user_info().sub
    # and server 1's own client moves the old copy to its key (its ID token names server 1)
    storage.delete(ag1.storage_key)
    moved = Authgear(agtest.NATIVE, server1, name="mix", token_storage=storage)
    moved.configure()
    assert moved.session_state is SessionState.AUTHENTICATED
    assert storage.load("mix") is None
    assert moved.fetch_user_info().sub


def test_reauthenticate_against_our_server_moves_auth_time_and_keeps_the_session(
    authgear_server: object, tmp_path: Path
) -> None:
    """Our server honours max_age=0 (a sign-in form again) and id_token_hint; its ID tokens
    carry auth_time and can_reauthenticate (true for a user with a password)."""
    ag = signed_in(authgear_server, tmp_path)
    email = ag.fetch_user_info().email
    assert email is not None and ag.can_reauthenticate
    before = ag.token_storage.load(ag.storage_key)
    first = ag.auth_time
    assert before is not None and first is not None
    time.sleep(1.1)  # auth_time counts whole seconds
    url = ag.make_reauthenticate_url(agtest.NATIVE_REDIRECT)
    result = ag.finish_authentication(browser_login(authgear_server, url, email))
    assert result.auth_time is not None and result.auth_time > first
    assert ag.auth_time == result.auth_time
    after = ag.token_storage.load(ag.storage_key)
    assert after is not None and after.id_token != before.id_token
    assert (after.refresh_token, after.access_token) == (before.refresh_token, before.access_token)
    assert ag.fetch_user_info().email == email  # the session still works
