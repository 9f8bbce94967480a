"""Revocation reaches JWT-mode backends within seconds (issue 11, point 4).

Real processes: our server (SQLite and PostgreSQL), the example FastAPI backend in JWT mode
polling the server's revocation feed (``--revocations``), the SDK signed in through the real
login form. Waits poll until something happens (with generous deadlines), never assert speed.
"""

from __future__ import annotations

import base64
import math
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from backend_support import (
    BackendProcess,
    access_claims,
    client_token,
    example_backend,
    mint,
    sdk_signed_in,
    signing_keys,
)

from agtest.server import (
    AUTHGEAR,
    CONFIDENTIAL,
    CONFIDENTIAL_SECRET,
    NATIVE,
    ServerProcess,
    free_port,
    tokens_for,
)
from authgear import SessionState, SessionStateChangeReason
from authgear.backend import ConfigurationError, RevocationFeed
from authgear.backend._revocations import FeedError, RevokedSessions, parse_page
from authgear.server.storage.revocations import Revocation, next_cursor

FEED = "/_resolver/revocations"
BASIC = (CONFIDENTIAL, CONFIDENTIAL_SECRET)


# --- helpers -------------------------------------------------------------------------------


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def sid_of(access_token: str) -> str:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    sid = claims["sid"]
    assert isinstance(sid, str) and sid
    return sid


def feed(server: ServerProcess, **params: str) -> httpx2.Response:
    return httpx2.get(server.url + FEED, params=params, auth=BASIC, timeout=10)


def feed_end(server: ServerProcess) -> str:
    """The cursor past everything in the feed now."""
    cursor = "0"
    while True:
        body = feed(server, after=cursor, limit="1000").json()
        if not body["has_more"]:
            return str(body["cursor"])
        cursor = body["cursor"]


def feed_sids(server: ServerProcess, after: str) -> set[str]:
    return {r["sid"] for r in feed(server, after=after).json()["revocations"]}


def admin_key(server: ServerProcess) -> str:
    out = subprocess.run(
        [
            AUTHGEAR,
            "admin",
            "keys",
            "create",
            "--name",
            "revfeed",
            "--data-dir",
            str(server.data_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def jwt_backend_with_feed(
    server: ServerProcess, tmp: Path, poll_interval: float = 2.0
) -> BackendProcess:
    return example_backend(
        "fastapi",
        "jwt",
        server.url,
        tmp,
        "--revocations",
        CONFIDENTIAL,
        "--poll-interval",
        str(poll_interval),
        "--allow-clients",
        env={"AUTHGEAR_CLIENT_SECRET": CONFIDENTIAL_SECRET},
    )


@pytest.fixture
def feed_backend(authgear_server: ServerProcess, tmp_path: Path) -> Iterator[BackendProcess]:
    backend = jwt_backend_with_feed(authgear_server, tmp_path)
    yield backend
    backend.stop()


def me(backend: BackendProcess, token: str) -> httpx2.Response:
    return httpx2.get(
        backend.url + "/api/me", headers={"authorization": f"Bearer {token}"}, timeout=10
    )


# --- end to end ----------------------------------------------------------------------------


def test_admin_revokes_session_jwt_backend_answers_401_within_seconds_and_sdk_ends_in_no_session(
    authgear_server: ServerProcess, feed_backend: BackendProcess, tmp_path: Path
) -> None:
    ag, sub, _ = sdk_signed_in(authgear_server, tmp_path / "sdk")
    token = ag.access_token
    assert token
    session_id = sid_of(token)
    # The backend knows the user (and has the token in its verified-token cache now).
    r = ag.fetch("GET", feed_backend.url + "/api/me")
    assert r.status_code == 200, r.text
    assert r.json()["sub"] == sub

    key = admin_key(authgear_server)
    r = httpx2.delete(
        f"{authgear_server.url}/_api/admin/sessions/{session_id}",
        headers={"authorization": f"Bearer {key}"},
    )
    assert r.status_code == 204, r.text
    revoked_at = time.monotonic()

    # The feed lists it, and the backend refuses the (cached) token once it has polled.
    assert session_id in feed_sids_all(authgear_server)
    wait_until(
        "the JWT backend refuses the revoked token",
        lambda: me(feed_backend, token).status_code == 401,
    )
    took = time.monotonic() - revoked_at
    r = me(feed_backend, token)
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    print(f"revocation reached the JWT backend in {took:.2f} s")  # for the report, not asserted

    # The SDK sees the 401, its one refresh is refused (the grant is gone): NO_SESSION.
    r = ag.fetch("GET", feed_backend.url + "/api/me")
    assert r.status_code == 401
    assert ag.session_state is SessionState.NO_SESSION
    assert ag.session_state_reason is SessionStateChangeReason.INVALID


def feed_sids_all(server: ServerProcess) -> set[str]:
    sids: set[str] = set()
    cursor = "0"
    while True:
        body = feed(server, after=cursor, limit="1000").json()
        sids |= {r["sid"] for r in body["revocations"]}
        if not body["has_more"]:
            return sids
        cursor = body["cursor"]


def test_user_disabled_jwt_backend_refuses_their_tokens(
    authgear_server: ServerProcess, feed_backend: BackendProcess, tmp_path: Path
) -> None:
    ag, sub, _ = sdk_signed_in(authgear_server, tmp_path / "sdk")
    token = ag.access_token
    assert token and me(feed_backend, token).status_code == 200
    key = admin_key(authgear_server)
    r = httpx2.post(
        f"{authgear_server.url}/_api/admin/users/{sub}/disable",
        headers={"authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    wait_until(
        "the JWT backend refuses a disabled user's token",
        lambda: me(feed_backend, token).status_code == 401,
    )


def test_sign_out_and_refresh_token_revocation_reach_the_feed(
    authgear_server: ServerProcess, feed_backend: BackendProcess
) -> None:
    """RFC 7009 revocation of the refresh token (what the SDK's logout does) ends the app
    session: the feed lists its id and the backend refuses its access token."""
    start = feed_end(authgear_server)
    tokens, _ = tokens_for(authgear_server)
    access = tokens["access_token"]
    assert me(feed_backend, access).status_code == 200
    r = httpx2.post(
        authgear_server.url + "/oauth2/revoke",
        data={"token": tokens["refresh_token"], "client_id": NATIVE},
    )
    assert r.status_code == 200
    assert sid_of(access) in feed_sids(authgear_server, start)
    wait_until(
        "refused after RFC 7009 revocation", lambda: me(feed_backend, access).status_code == 401
    )


def test_old_token_without_sid_and_client_tokens_still_verify_with_the_feed_on(
    authgear_server: ServerProcess, feed_backend: BackendProcess
) -> None:
    # A client_credentials token has no session, hence no sid: unaffected.
    token, _ = client_token(authgear_server)
    assert "sid" not in jwt.decode(token, options={"verify_signature": False})
    r = httpx2.get(feed_backend.url + "/api/machine", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    if authgear_server.backend != "sqlite":
        return  # the server's signing key is read from its SQLite file below
    # A user's token minted before tokens carried sid (same key, same claims, no sid).
    kid, key, _ = signing_keys(authgear_server)[0]
    old = mint(key, kid, access_claims(authgear_server, sub="old-user", jti="old"))
    r = me(feed_backend, old)
    assert r.status_code == 200, r.text
    assert r.json()["sub"] == "old-user"


# --- the feed over HTTP ----------------------------------------------------------------------


def test_feed_cursor_and_paging_list_each_revocation_once_in_order(
    authgear_server: ServerProcess,
) -> None:
    start = feed_end(authgear_server)
    sids = []
    for _ in range(3):
        tokens, _ = tokens_for(authgear_server)
        sids.append(sid_of(tokens["access_token"]))
        r = httpx2.post(
            authgear_server.url + "/oauth2/revoke",
            data={"token": tokens["refresh_token"], "client_id": NATIVE},
        )
        assert r.status_code == 200
    seen: list[str] = []
    cursor = start
    pages = 0
    while True:
        r = feed(authgear_server, after=cursor, limit="1")
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert len(body["revocations"]) <= 1
        assert body["retention"] >= 1800  # the longest access-token lifetime, and a margin
        for item in body["revocations"]:
            assert isinstance(item["revoked_at"], int) and item["revoked_at"] > 0
        seen += [item["sid"] for item in body["revocations"]]
        pages += 1
        assert int(body["cursor"]) >= int(cursor)  # the cursor never moves back
        if not body["has_more"]:
            cursor = body["cursor"]
            break
        assert int(body["cursor"]) > int(cursor)  # a full page moves it forward
        cursor = body["cursor"]
    assert [s for s in seen if s in sids] == sids  # each once, in revocation order
    assert pages >= 3
    # Past the end: nothing, and the cursor stays.
    body = feed(authgear_server, after=cursor).json()
    assert body["revocations"] == [] and body["cursor"] == cursor and body["has_more"] is False


@pytest.mark.parametrize(
    "params",
    [
        {"after": "-1"},
        {"after": "abc"},
        {"after": " 7"},
        {"after": "7_0"},
        {"after": "\u0667"},  # an Arabic-Indic digit: int() takes it, we do not
        {"after": "9" * 30},
        {"limit": "0"},
        {"limit": "5000"},
        {"limit": ""},
    ],
)
def test_feed_bad_cursor_or_limit_is_a_400_oauth_error_not_a_500(
    authgear_server: ServerProcess, params: dict[str, str]
) -> None:
    r = feed(authgear_server, **params)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"


def test_feed_duplicated_cursor_parameter_is_refused(authgear_server: ServerProcess) -> None:
    r = httpx2.get(authgear_server.url + FEED + "?after=0&after=999999", auth=BASIC)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"


def test_feed_refuses_absent_forged_public_and_bearer_credentials(
    authgear_server: ServerProcess,
) -> None:
    url = authgear_server.url + FEED
    tokens, _ = tokens_for(authgear_server)
    attempts: list[dict[str, Any]] = [
        {},  # no credentials
        {"auth": (CONFIDENTIAL, "wrong-secret")},
        {"auth": (CONFIDENTIAL, "")},
        {"auth": ("no-such-client", CONFIDENTIAL_SECRET)},
        {"auth": (NATIVE, "anything")},  # a public client has no secret to prove
        {"headers": {"authorization": f"Bearer {tokens['access_token']}"}},  # a user's token
        {"headers": {"authorization": "Basic !!!not-base64"}},
        {"headers": {"authorization": "Basic " + base64.b64encode(b"no-colon").decode()}},
    ]
    for attempt in attempts:
        r = httpx2.get(url, **attempt)
        assert r.status_code == 401, (attempt, r.text)
        assert r.json()["error"] == "invalid_client"
        assert r.headers["www-authenticate"].startswith("Basic")
        assert "revocations" not in r.json()


def test_two_server_processes_on_one_database_revoke_on_one_feed_of_other_reports_it(
    authgear_server: ServerProcess, tmp_path: Path
) -> None:
    """The database is the source of truth: a second process (another port, its own data
    folder, the same database) lists a revocation the first made."""
    port = free_port()
    config = {**authgear_server.config, "port": port, "database_url": authgear_server.database_url}
    other = ServerProcess(tmp_path / "other", port, config)
    other.start()
    try:
        start = feed_end(other)
        tokens, _ = tokens_for(authgear_server)
        r = httpx2.post(
            authgear_server.url + "/oauth2/revoke",
            data={"token": tokens["refresh_token"], "client_id": NATIVE},
        )
        assert r.status_code == 200
        assert sid_of(tokens["access_token"]) in feed_sids(other, start)
    finally:
        other.stop()


def test_feed_unreachable_verification_goes_on_one_warning_then_one_recovery_line(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    fresh_server.start()
    ag, _, _ = sdk_signed_in(fresh_server, tmp_path / "sdk")
    cached = ag.access_token
    assert cached
    fresh, _ = tokens_for(fresh_server)  # not yet seen by the backend
    backend = jwt_backend_with_feed(fresh_server, tmp_path, poll_interval=0.2)
    try:
        assert me(backend, cached).status_code == 200
        fresh_server.stop()
        wait_until("the warning", lambda: "cannot be read" in backend.log())
        time.sleep(2)  # ~10 more failed polls
        # Verification goes on: a cached token, and one verified for the first time.
        assert me(backend, cached).status_code == 200
        assert me(backend, fresh["access_token"]).status_code == 200
        time.sleep(1)
        assert backend.log().count("cannot be read") == 1, backend.log()
        fresh_server.start()
        wait_until("the recovery line", lambda: "can be read again" in backend.log())
        time.sleep(1)
        log = backend.log()
        assert log.count("can be read again") == 1 and log.count("cannot be read") == 1, log
        assert CONFIDENTIAL_SECRET not in log
    finally:
        backend.stop()


# --- storage: purge and cursor (real SQLite and PostgreSQL) ----------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feed.db'}"
    pg = request.getfixturevalue("postgres")
    url: str = pg.create_database(f"ag_feed_{int(time.time() * 1000) % 10**9}")
    return url


def test_purge_forgets_old_revocations_and_numbers_are_never_reused(database_url: str) -> None:
    import asyncio

    from authgear.server.storage import Purged, migrate, revocations
    from authgear.server.storage.sql import SQLRepository

    migrate.upgrade(database_url)

    async def run() -> None:
        repo = SQLRepository.open(database_url)
        try:
            async with repo.engine.begin() as conn:
                await revocations.record(conn, ["old-1", "old-2"], now=1000)
                await revocations.record(conn, ["new-1"], now=5000)
            page = await repo.revocations_after(0, 10, now=5000)
            assert [r.session_id for r in page.items] == ["old-1", "old-2", "new-1"]
            top = page.next_cursor
            purged = Purged()
            await repo.purge_revocations(2000, purged)
            assert purged.rows["revoked_sessions"] == 2
            page = await repo.revocations_after(0, 10, now=5000)
            assert [r.session_id for r in page.items] == ["new-1"]
            # Everything purged, then a new row: its number is past every old one.
            await repo.purge_revocations(10**9, Purged())
            async with repo.engine.begin() as conn:
                await revocations.record(conn, ["later"], now=6000)
            page = await repo.revocations_after(top, 10, now=6000)
            assert [r.session_id for r in page.items] == ["later"]
        finally:
            await repo.close()

    asyncio.run(run())


# --- pure: the cursor and the verifier's revoked set --------------------------------------------


def test_cursor_stops_before_a_young_hole_a_later_commit_may_fill_and_passes_an_old_one() -> None:
    rows = [Revocation(1, "a", 100), Revocation(3, "c", 100), Revocation(4, "d", 100)]
    # Row 2 may still commit (PostgreSQL commits out of order): the cursor waits at 1.
    assert next_cursor(0, rows, now=105) == 1
    # A hole older than the grace (rolled back, or purged) is passed.
    assert next_cursor(0, rows, now=200) == 4
    assert next_cursor(0, [Revocation(5, "e", 100)], now=105) == 0
    assert next_cursor(4, [Revocation(5, "e", 100)], now=105) == 5
    assert next_cursor(7, [], now=105) == 7


def page(items: list[dict[str, Any]], cursor: str = "1", has_more: bool = False) -> Any:
    return {"revocations": items, "cursor": cursor, "has_more": has_more, "retention": 1860}


def test_revoked_set_refuses_tokens_issued_until_the_revocation_and_forgets_after_retention() -> (
    None
):
    state = RevokedSessions(leeway=10)
    news = state.apply(parse_page(page([{"sid": "s1", "revoked_at": 1000}], cursor="7")))
    assert news == {"s1": 1000} and state.cursor == "7"
    assert state.refuses("s1", iat=900)
    assert state.refuses("s1", iat=1005)  # clock skew between server processes
    assert not state.refuses("s1", iat=1011)  # issued after (a re-enabled user's new token)
    assert not state.refuses("s2", iat=900)
    assert not state.refuses(None, iat=900)  # an old token without sid
    assert not state.refuses(["s1"], iat=900)  # a non-string sid is no session id
    # The same row again (a held cursor repeats rows): nothing new.
    assert state.apply(parse_page(page([{"sid": "s1", "revoked_at": 1000}]))) == {}
    state.expire(now=1000 + 1860 + 5)
    assert state.refuses("s1", iat=900)
    state.expire(now=1000 + 1860 + 11)
    assert not state.refuses("s1", iat=900)


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"revocations": "x", "cursor": "1", "has_more": False, "retention": 1},
        page([{"sid": 5, "revoked_at": 1}]),
        page([{"sid": "s", "revoked_at": "1"}]),
        page([{"sid": "", "revoked_at": 1}]),
        page([{"sid": "s" * 300, "revoked_at": 1}]),
        page([], cursor="-1"),
        {**page([]), "retention": 0},
        {**page([]), "has_more": "no"},
    ],
)
def test_a_malformed_feed_page_is_refused_whole(document: Any) -> None:
    with pytest.raises(FeedError):
        parse_page(document)


def test_feed_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        RevocationFeed("", "secret")
    with pytest.raises(ConfigurationError):
        RevocationFeed("client", "secret", poll_interval=0)
    with pytest.raises(ConfigurationError):
        RevocationFeed("client", "secret", poll_interval=math.nan)
    assert "secret" not in repr(RevocationFeed("client", "secret"))
