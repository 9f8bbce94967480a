"""Resource limits (issue 18, points 2, 4 and 5), each as the attack over real sockets: an
anonymous visitor filling the database through /oauth2/authorize, expired rows and stale
lockouts piling up, a user's sessions growing without bound, concurrent wrong passwords
exhausting memory with argon2, and oversized or echoing admin API requests."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from agtest.server import (
    AUTHGEAR,
    CSRF_RE,
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
MAX_STATE, MAX_NONCE, MAX_LOGIN_HINT, MAX_UI_LOCALES = 1024, 512, 320, 64


def authorize(
    server: ServerProcess, params: dict[str, str], ip: str | None = None
) -> httpx2.Response:
    headers = {"X-Forwarded-For": ip} if ip else {}
    return httpx2.get(server.url + "/oauth2/authorize", params=params, headers=headers, timeout=30)


def location_query(r: httpx2.Response) -> dict[str, str]:
    assert r.status_code == 303, (r.status_code, r.text[:300])
    return {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}


def flow_id(r: httpx2.Response) -> str:
    assert r.status_code == 303 and r.headers["location"].startswith("/login?flow="), r.text
    return location_query(r)["flow"]


def stored_flow(server: ServerProcess, fid: str) -> dict[str, Any]:
    """The authorization request a sign-in flow stores (its starter)."""
    rows = server.query("SELECT CAST(data AS TEXT) FROM auth_flows WHERE id = ?", fid)
    assert len(rows) == 1
    data: dict[str, Any] = json.loads(rows[0][0])
    assert data["starter"]["kind"] == "authorize"
    request: dict[str, Any] = data["starter"]["request"]
    return request


def count(server: ServerProcess, sql: str, *params: Any) -> int:
    return int(server.query(sql, *params)[0][0])


METRICS_TOKEN = "resource-limits-metrics-token"


def metric(server: ServerProcess, name: str, labels: str = "") -> float:
    """A sample from /metrics (0 when absent). /metrics is off the public port unless the
    server has a metrics token: the tests that read it set ``metrics_token: METRICS_TOKEN``."""
    r = httpx2.get(
        server.url + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 200, f"/metrics answered {r.status_code}"
    text = r.text
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def full_params(**extra: str) -> dict[str, str]:
    """An authorization request with every stored value at its cap."""
    return Flow.new().params(
        state="s" * MAX_STATE,
        nonce="n" * MAX_NONCE,
        login_hint="h" * (MAX_LOGIN_HINT - 12) + "@example.com",
        ui_locales=("en-US " * 20)[:MAX_UI_LOCALES].strip(),
        **extra,
    )


# -- 18.2: what an anonymous authorize request may store ---------------------------------------


@pytest.mark.parametrize(
    ("name", "cap"),
    [
        ("state", MAX_STATE),
        ("nonce", MAX_NONCE),
        ("login_hint", MAX_LOGIN_HINT),
        ("ui_locales", MAX_UI_LOCALES),
    ],
)
def test_authorize_value_over_its_cap_is_refused_by_redirect_not_stored_or_truncated(
    authgear_server: ServerProcess, name: str, cap: int
) -> None:
    server = authgear_server
    flows_before = count(server, "SELECT count(*) FROM auth_flows")
    flow = Flow.new()
    r = authorize(server, flow.params(**{name: "x" * (cap + 1)}))
    err = location_query(r)
    assert r.headers["location"].startswith("http://127.0.0.1:5555/callback?")
    assert err["error"] == "invalid_request" and name in err["error_description"]
    # The client's state comes back unchanged (RFC 6749 §4.1.2.1), even when it is the culprit.
    assert err["state"] == ("x" * (cap + 1) if name == "state" else flow.state)
    assert count(server, "SELECT count(*) FROM auth_flows") == flows_before
    # At the cap exactly: stored whole, never cut short.
    fid = flow_id(authorize(server, flow.params(**{name: "y" * cap})))
    assert stored_flow(server, fid)[name] == "y" * cap


def test_authorize_repeated_scopes_and_prompts_are_stored_once(
    authgear_server: ServerProcess,
) -> None:
    scope = " ".join(["openid", "offline_access"] * 180)
    r = authorize(authgear_server, Flow.new().params(scope=scope, prompt="login " * 500))
    data = stored_flow(authgear_server, flow_id(r))
    assert data["scopes"] == ["openid", "offline_access"]
    assert data["prompt"] == ["login"]


def table_bytes(server: ServerProcess) -> int:
    """The login-flow table's size on disk, with its indexes."""
    if server.backend == "sqlite":
        return count(
            server,
            "SELECT sum(pgsize) FROM dbstat WHERE name = 'auth_flows' OR name LIKE 'ix_auth_flows%'"
            " OR name LIKE 'sqlite_autoindex_auth_flows%'",
        )
    return count(server, "SELECT pg_total_relation_size('auth_flows')")


@pytest.fixture
def flow_capped(fresh_server: ServerProcess) -> Iterator[ServerProcess]:
    """A server that counts visitors by X-Forwarded-For and keeps 50 live flows each."""
    fresh_server.config["trusted_proxies"] = ["127.0.0.1"]
    fresh_server.config["rate_limits"] = {
        "enabled": True,
        "authorize_per_ip_per_minute": 100_000,
        "login_flows_per_ip": 50,
    }
    fresh_server.start()
    yield fresh_server


def test_200_anonymous_authorize_requests_from_one_ip_grow_the_database_little(
    flow_capped: ServerProcess,
) -> None:
    server = flow_capped
    before = table_bytes(server)
    errors = []
    for _ in range(200):
        r = authorize(server, full_params(), ip="203.0.113.9")
        if not r.headers["location"].startswith("/login?flow="):
            errors.append(location_query(r)["error"])
    # The 51st unfinished sign-in on is refused: the app hears it, nothing more is stored.
    assert errors == ["temporarily_unavailable"] * 150
    assert count(server, "SELECT count(*) FROM auth_flows WHERE ip_key = ?", "203.0.113.9") == 50
    stored = count(server, "SELECT sum(length(CAST(data AS TEXT))) FROM auth_flows")
    assert stored < 50 * 3 * 1024  # every value at its cap: under 3 KiB a flow
    # Before: 200 such requests grew the database 5.6 MB. Now the table grows by the capped
    # flows plus index pages, a small fraction of a megabyte.
    growth = table_bytes(server) - before
    assert growth < 512 * 1024, growth
    # Another visitor is not affected by the first one's cap.
    assert flow_id(authorize(server, full_params(), ip="198.51.100.7"))


def test_rotating_ipv6_addresses_within_one_64_share_one_flow_cap(
    flow_capped: ServerProcess,
) -> None:
    server = flow_capped
    outcomes = []
    for i in range(60):
        r = authorize(server, Flow.new().params(), ip=f"2001:db8:1:2:{i:x}:{i:x}:0:{i + 1:x}")
        outcomes.append(r.headers["location"].startswith("/login?flow="))
    assert outcomes == [True] * 50 + [False] * 10
    key = "2001:db8:1:2::/64"
    assert count(server, "SELECT count(*) FROM auth_flows WHERE ip_key = ?", key) == 50
    # The neighbouring /64 is another subscriber.
    assert flow_id(authorize(server, Flow.new().params(), ip="2001:db8:1:3::1"))


def test_concurrent_authorize_requests_cannot_overshoot_the_flow_cap(
    flow_capped: ServerProcess,
) -> None:
    server = flow_capped
    with ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(
            pool.map(lambda _: authorize(server, Flow.new().params(), ip="192.0.2.77"), range(120))
        )
    started = [r for r in responses if r.headers["location"].startswith("/login?flow=")]
    assert len(started) == 50
    assert count(server, "SELECT count(*) FROM auth_flows WHERE ip_key = ?", "192.0.2.77") == 50


# -- 18.2: the purge -----------------------------------------------------------------------------

FILL_FLOWS = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
INSERT INTO auth_flows (id, data, created_at, expires_at, ip_key)
SELECT 'expired-' || CAST(i AS TEXT), {json}, 0, 1, NULL FROM n
"""


def json_literal(server: ServerProcess, text: str) -> str:
    """A JSON value in SQL (SQLite stores JSON as text; a CAST there would make it a number)."""
    return f"CAST('{text}' AS JSON)" if server.backend == "postgresql" else f"'{text}'"


def test_purge_deletes_floods_in_batches_and_expires_stale_lockouts_and_old_audit_entries(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    server.config.update(
        purge_interval=1,
        key_refresh_interval=1,
        audit_log_retention_days=30,
        metrics_enabled=True,
        metrics_token=METRICS_TOKEN,
    )
    server.start()
    now = int(time.time())
    day = 86400
    # What a flood leaves behind: 1 200 expired flows, lockout rows for random emails.
    server.query(FILL_FLOWS.format(json=json_literal(server, "{}")))
    live = flow_id(authorize(server, Flow.new().params()))
    failures = {
        "email:stale@example.com": (now - 3600, None),  # history over, never locked: goes
        "email:unlocked@example.com": (now - 3600, now - 60),  # lock over: goes
        "email:locked@example.com": (now - 3600, now + 3600),  # still locked: stays
        "email:recent@example.com": (now - 10, None),  # within the history window: stays
    }
    for key, (first_at, locked_until) in failures.items():
        server.query(
            "INSERT INTO login_failures (key, count, first_at, locked_until) VALUES (?, ?, ?, ?)",
            key,
            3,
            first_at,
            locked_until,
        )
    for action, at in (("old.entry", now - 31 * day), ("recent.entry", now - 29 * day)):
        server.query(
            "INSERT INTO audit_log (at, actor_type, actor_id, action, details)"
            f" VALUES (?, 'cli', 'test', ?, {json_literal(server, '{}')})",
            at,
            action,
        )

    wait_until(
        lambda: count(server, "SELECT count(*) FROM auth_flows WHERE id LIKE 'expired-%'") == 0,
        "the purge",
    )
    wait_until(
        lambda: count(server, "SELECT count(*) FROM audit_log WHERE action = 'old.entry'") == 0,
        "the audit retention",
    )
    keys = {r[0] for r in server.query("SELECT key FROM login_failures")}
    assert keys == {"email:locked@example.com", "email:recent@example.com"}
    assert [r[0] for r in server.query("SELECT action FROM audit_log")] == ["recent.entry"]
    assert stored_flow(server, live)["client_id"] == NATIVE  # a live flow stays
    # 1 200 rows went in batches of 500, each its own short transaction.
    assert metric(server, "authgear_purged_rows_total", 'table="auth_flows"') >= 1200
    assert metric(server, "authgear_purge_batches_total") >= 3 + 6


# -- 18.2: sessions per user ---------------------------------------------------------------------


def sign_in(server: ServerProcess, email: str, scope: str = "openid") -> tuple[Browser, str]:
    """A browser signed in through the form; returns it and the authorization code."""
    cb, _, browser = login(server, email, PASSWORD, scope=scope)
    return browser, cb["code"]


def signed_in(browser: Browser) -> bool:
    return 'action="/logout"' in browser.http.get("/").text


def test_sessions_past_max_per_user_end_least_recently_used_first(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    server.config["session"] = {"max_per_user": 3}
    server.start()
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    browsers = [sign_in(server, email)[0] for _ in range(3)]
    assert all(signed_in(b) for b in browsers)
    # The first browser was used a minute ago, the second ten, the third five.
    now = int(time.time())
    for b, ago in zip(browsers, (60, 600, 300), strict=True):
        server.query(
            "UPDATE idp_sessions SET last_access_at = ? WHERE id = ?",
            now - ago,
            b.http.cookies["session"].split(".")[0],
        )
    browsers.append(sign_in(server, email)[0])
    assert [signed_in(b) for b in browsers] == [True, False, True, True]
    # An app's grant counts too: its refresh token is ended like a revocation.
    flow = Flow.new()
    cb, flow, app_browser = login(server, email, PASSWORD, flow=flow)
    tokens = exchange(server, cb["code"], flow).json()
    live = count(server, "SELECT count(*) FROM idp_sessions WHERE user_id = ?", user_id) + count(
        server, "SELECT count(*) FROM offline_grants WHERE user_id = ?", user_id
    )
    assert live == 3
    assert refresh(server, tokens["refresh_token"]).status_code == 200  # the newest stays
    evicted = server.query(
        "SELECT actor_type, target_type FROM audit_log WHERE action = 'session.evict'"
    )
    assert evicted == [("system", "session")] * 3
    for b in [*browsers, app_browser]:
        b.close()


def test_concurrent_sign_ins_cannot_exceed_max_per_user(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["session"] = {"max_per_user": 3}
    # Every sign-in attempt reserves a place in the lockout count before its password is
    # checked (security.md, "Password guessing"): ten at once would lock the account. This test
    # is about the session cap, so the lockout is off.
    server.config["lockout"] = {"enabled": False}
    server.start()
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    with ThreadPoolExecutor(max_workers=10) as pool:
        for browser, _ in pool.map(lambda _: sign_in(server, email), range(10)):
            browser.close()
    assert count(server, "SELECT count(*) FROM idp_sessions WHERE user_id = ?", user_id) == 3


def add_sessions(server: ServerProcess, user_id: str, n: int) -> None:
    """Sessions seen from other devices over the last hours (stored directly: the cap is not
    what this is about)."""
    now = int(time.time())
    for i in range(n):
        server.query(
            "INSERT INTO idp_sessions (id, user_id, secret_hash, created_at, authenticated_at,"
            " amr, last_access_at, last_access_ip, last_access_user_agent, expires_at)"
            f" VALUES (?, ?, ?, ?, ?, {json_literal(server, '[]')}, ?, NULL, NULL, ?)",
            f"00000000-0000-0000-0000-{i:012d}",
            user_id,
            "0" * 64,
            now - 7200,
            now - 7200,
            now - 3600 - i,
            now + 3600,
        )


def test_session_lists_are_paginated_in_the_admin_api_and_settings(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    server.start()
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    browser, _ = sign_in(server, email)
    add_sessions(server, user_id, 30)
    key = _admin_key(server)
    api = httpx2.Client(
        base_url=server.url + "/_api/admin", headers={"Authorization": f"Bearer {key}"}
    )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = api.get(f"/users/{user_id}/sessions", params=params).json()
        assert len(page["sessions"]) <= 7
        seen += [s["id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 31
    assert seen[0] == browser.http.cookies["session"].split(".")[0]  # most recent first
    assert seen[1:] == [f"00000000-0000-0000-0000-{i:012d}" for i in range(30)]
    forged = api.get(f"/users/{user_id}/sessions", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_request"
    # The user's own page shows 25, then the rest.
    first = browser.http.get("/settings/sessions")
    assert first.status_code == 200 and first.text.count("Sign out<span") == 25
    older = re.search(r'href="(/settings/sessions\?cursor=[^"#]+)', first.text)
    assert older, "no link to older sessions"
    second = browser.http.get(older.group(1).replace("&amp;", "&"))
    assert second.text.count("Sign out<span") == 6 and "Older sessions" not in second.text
    api.close()
    browser.close()


def _admin_key(server: ServerProcess) -> str:
    import subprocess

    out = subprocess.run(
        [AUTHGEAR, "admin", "keys", "create", "--name", "t", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


# -- 18.4: password hashing ----------------------------------------------------------------------


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def test_50_concurrent_wrong_passwords_never_run_more_hashes_than_the_bound_and_never_500(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    server.config["password_hashing"] = {"max_concurrent": 2, "queue_timeout": 0.2}
    server.config["lockout"] = {"enabled": False}
    server.config["metrics_token"] = METRICS_TOKEN
    server.start()
    assert server.proc is not None
    email = new_email()
    server.create_user(email, PASSWORD)
    page = Browser(server.url)
    login_url = page.authorize(**Flow.new().params()).headers["location"]
    csrf = CSRF_RE.search(page.http.get(login_url).text)
    assert csrf
    cookies = dict(page.http.cookies)
    rss_before = vm_kib(server.proc.pid, "VmRSS")

    def attempt(i: int) -> httpx2.Response:
        with httpx2.Client(base_url=server.url, cookies=cookies, timeout=60) as c:
            data = {"csrf_token": csrf.group(1), "email": email, "password": f"wrong-{i}"}
            return c.post(login_url, data=data)

    busy: list[httpx2.Response] = []
    answered = 0
    for _ in range(5):  # bursts until the queue has overflowed at least once
        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(attempt, range(50)))
        statuses = {r.status_code for r in responses}
        assert statuses <= {401, 503}, statuses
        answered += sum(r.status_code == 401 for r in responses)
        busy += [r for r in responses if r.status_code == 503]
        if answered and any("Wait a few seconds" in r.text for r in busy):
            break
    # 503 with Retry-After, and the form's clear page. (On a starved machine a request may
    # also find the database pool busy: that is the JSON 503 of an unavailable database.)
    for r in busy:
        assert r.headers["retry-after"].isdigit()
    hashing_busy = [r for r in busy if "Wait a few seconds and try again" in r.text]
    assert all(
        r.json()["error"] == "temporarily_unavailable" for r in busy if r not in hashing_busy
    )
    assert hashing_busy and answered
    assert metric(server, "authgear_password_hashing_limit") == 2
    peak = metric(server, "authgear_password_hashing_peak")
    assert 1 <= peak <= 2
    assert metric(server, "authgear_password_hashing_rejected_total") == len(hashing_busy)
    # Two argon2 buffers of 19 MiB at a time, not one per request.
    grown_mib = (vm_kib(server.proc.pid, "VmHWM") - rss_before) / 1024
    assert grown_mib < 150, grown_mib
    assert " ERROR " not in server.log()
    page.close()


# -- 18.5: the admin API's bodies and errors -----------------------------------------------------


@pytest.fixture(scope="module")
def admin_key(authgear_server: ServerProcess) -> str:
    return _admin_key(authgear_server)


def raw_exchange(
    server: ServerProcess, head: bytes, body_chunks: Iterator[bytes]
) -> tuple[int, int]:
    """Send a request head, then body chunks until the server answers or closes; returns the
    status and how many body bytes were sent by then."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sent = 0
    answer = b""
    stop = threading.Event()

    def read() -> None:
        nonlocal answer
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
        except OSError:
            pass
        stop.set()

    reader = threading.Thread(target=read)
    reader.start()
    sock.sendall(head)
    try:
        for chunk in body_chunks:
            if stop.is_set():
                break
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the server closed the connection: it will not read the rest
    reader.join(30)
    sock.close()
    assert answer, "no answer"
    return int(answer.split(b" ", 2)[1]), sent


def test_admin_api_100_mib_declared_body_is_refused_413_before_reading(
    authgear_server: ServerProcess, admin_key: str
) -> None:
    head = (
        "POST /_api/admin/users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {admin_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
    ).encode()
    # Nothing of the body is sent: the answer cannot wait for it.
    status, _ = raw_exchange(authgear_server, head, iter([]))
    assert status == 413


def test_admin_api_endless_chunked_body_is_refused_413_after_the_cap(
    authgear_server: ServerProcess, admin_key: str
) -> None:
    head = (
        "POST /_api/admin/users HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {admin_key}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    piece = b"x" * 16384
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    total = 100 * 1024 * 1024
    status, sent = raw_exchange(authgear_server, head, iter([chunk] * (total // len(piece))))
    assert status == 413
    assert sent < total // 4  # answered long before a 100 MiB body was in


def test_admin_api_422_never_echoes_a_password(
    authgear_server: ServerProcess, admin_key: str
) -> None:
    secret = "Tr0ub4dor&3-very-secret"
    api = httpx2.Client(
        base_url=authgear_server.url + "/_api/admin",
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    bodies = [
        {"email": new_email(), "password": secret * 400},  # over max_length (8192)
        {"email": new_email(), "password": secret, "extra": secret},  # extra field
        {"email": [secret], "password": secret},  # wrong type
    ]
    for body in bodies:
        r = api.post("/users", json=body)
        assert r.status_code == 422, r.text
        assert secret not in r.text and "Tr0ub4dor" not in r.text
        out = r.json()
        assert out["error"] == "invalid_request" and out["detail"]
        assert all(set(d) == {"loc", "msg", "type"} for d in out["detail"])
    r = api.post(
        "/users",
        content=b'{"email": "a@example.com", "password": "' + secret.encode() + b'"',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422 and secret not in r.text
    api.close()


# -- 18.2: the purge leaves the event loop to requests between batches ---------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'purge.db'}"
    pg = request.getfixturevalue("postgres")
    url: str = pg.create_database(f"ag_purge_{int(time.time() * 1000) % 10**9}")
    return url


def test_purge_of_a_flood_yields_to_other_tasks_between_batches(database_url: str) -> None:
    """What the 5 000-row delete did on the loop (0.7 s with nothing else served): now every
    batch is its own transaction, and a task waiting on the same loop runs between any two."""
    import asyncio

    from sqlalchemy import insert

    from authgear.server.storage import migrate
    from authgear.server.storage import schema as t
    from authgear.server.storage.sql import SQLRepository

    migrate.upgrade(database_url)

    async def run() -> tuple[int, int, dict[str, int]]:
        repo = SQLRepository.open(database_url)
        rows = [
            {"id": f"old-{i}", "data": {}, "created_at": 0, "expires_at": 1, "ip_key": None}
            for i in range(2000)
        ]
        async with repo.engine.begin() as conn:
            await conn.execute(insert(t.auth_flows), rows)  # type: ignore[arg-type]
        ticks: list[int] = []
        done = asyncio.Event()

        async def other_request() -> None:
            while not done.is_set():
                ticks.append(1)
                await asyncio.sleep(0)

        ticker = asyncio.create_task(other_request())
        await asyncio.sleep(0)
        before = len(ticks)
        purged = await repo.purge_expired(10**9, failures_before=0, batch_size=100)
        during = len(ticks) - before
        done.set()
        await ticker
        await repo.close()
        return purged.batches, during, purged.rows

    batches, during, rows = asyncio.run(run())
    assert rows["auth_flows"] == 2000
    assert batches >= 20
    assert during >= 19  # at least once between every two auth_flows batches
