"""Scale-out: several server processes sharing PostgreSQL (+ Redis), worker processes, key
rotation, health and metrics, and a database outage."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest

from agtest.server import (
    AUTHGEAR,
    NATIVE,
    ServerProcess,
    free_port,
    refresh,
    server_config,
    tokens_for,
)
from agtest.services import Postgres, Redis, start_postgres


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _resolve(server: ServerProcess, token: str) -> str:
    r = httpx2.get(server.url + "/_resolver/resolve", headers=_bearer(token))
    return r.headers.get("x-authgear-session-valid", "absent")


@pytest.fixture
def pair(
    tmp_path: Path, postgres: Postgres, redis_server: Redis
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Servers A and B on different ports and data folders, one PostgreSQL and one Redis, and
    one public origin (A's address), as behind a load balancer: one issuer."""
    url = postgres.create_database(f"pair_{os.getpid()}_{time.monotonic_ns()}")
    servers = []
    ports = [free_port(), free_port()]
    for name, port in zip(("a", "b"), ports, strict=True):
        config = server_config(
            port,
            public_origin=f"http://127.0.0.1:{ports[0]}",
            database_url=url,
            redis_url=redis_server.url,
            key_refresh_interval=1,
            rate_limits={"enabled": True, "token_per_ip_per_minute": 1000},
        )
        servers.append(ServerProcess(tmp_path / name, port, config))
    for s in servers:
        s.start()
    yield servers[0], servers[1]
    for s in servers:
        s.stop()


def test_two_servers_share_sessions_limits_and_keys(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    # One issuer (the fixture's public_origin), as a real deployment has. Log in on A, refresh
    # on B.
    tokens, _ = tokens_for(a)
    r = refresh(b, tokens["refresh_token"])
    assert r.status_code == 200, r.text
    at_b = r.json()["access_token"]
    assert _resolve(b, tokens["access_token"]) == "true"
    assert _resolve(a, at_b) == "true"
    # Revoke on A: B's resolver says invalid at once, for tokens minted by either.
    httpx2.post(a.url + "/oauth2/revoke", data={"token": tokens["refresh_token"]})
    assert _resolve(b, at_b) == "false"
    assert _resolve(b, tokens["access_token"]) == "false"
    assert refresh(b, tokens["refresh_token"]).json()["error"] == "invalid_grant"

    # A key rotated (in the shared database) is served by both.
    before = {k["kid"] for k in httpx2.get(b.url + "/oauth2/jwks").json()["keys"]}
    out = subprocess.run(
        [AUTHGEAR, "keys", "rotate", "--data-dir", str(a.data_dir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "new signing key" in out.stdout
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after_a = {k["kid"] for k in httpx2.get(a.url + "/oauth2/jwks").json()["keys"]}
        after_b = {k["kid"] for k in httpx2.get(b.url + "/oauth2/jwks").json()["keys"]}
        if len(after_a) == len(after_b) == 2:
            break
        time.sleep(0.2)
    assert after_a == after_b and before < after_b
    new_kid = (after_b - before).pop()
    # Two refresh intervals later the new key signs, on both servers.
    time.sleep(2.5)
    fresh, _ = tokens_for(b)
    assert jwt.get_unverified_header(fresh["access_token"])["kid"] == new_kid
    other = refresh(a, fresh["refresh_token"]).json()["access_token"]
    assert jwt.get_unverified_header(other)["kid"] == new_kid
    # Tokens signed by the old key still verify against the JWKS (the old key is kept).
    jwks = httpx2.get(a.url + "/oauth2/jwks").json()
    old_header = jwt.get_unverified_header(at_b)
    key = next(k for k in jwks["keys"] if k["kid"] == old_header["kid"])
    jwt.decode(at_b, jwt.PyJWK(key).key, algorithms=["RS256"], audience=a.url)


def test_rate_limits_are_shared(tmp_path: Path, postgres: Postgres, redis_server: Redis) -> None:
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()  # counters of earlier tests
    url = postgres.create_database(f"rl_{time.monotonic_ns()}")
    servers = []
    for name in ("a", "b"):
        port = free_port()
        config = server_config(
            port,
            database_url=url,
            redis_url=redis_server.url,
            rate_limits={"enabled": True, "token_per_ip_per_minute": 6},
        )
        servers.append(ServerProcess(tmp_path / name, port, config))
    try:
        for s in servers:
            s.start()
        form = {"grant_type": "refresh_token", "client_id": NATIVE, "refresh_token": "a.b"}
        codes = [
            httpx2.post(servers[i % 2].url + "/oauth2/token", data=form).status_code
            for i in range(8)
        ]
        # 6 in total across both servers, not 6 each.
        assert codes == [400] * 6 + [429, 429]
    finally:
        for s in servers:
            s.stop()


def test_rate_limits_turned_off_are_off_with_redis_too(tmp_path: Path, redis_server: Redis) -> None:
    """``rate_limits.enabled: false`` turned off the database and memory limiters but not
    Redis's (it was built with its default, on): the same requests were refused with 429."""
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()  # counters of earlier tests
    port = free_port()
    config = server_config(
        port,
        redis_url=redis_server.url,
        rate_limits={"enabled": False, "token_per_ip_per_minute": 2},
    )
    server = ServerProcess(tmp_path / "data", port, config)
    server.start()
    try:
        form = {"grant_type": "refresh_token", "client_id": NATIVE, "refresh_token": "a.b"}
        codes = [httpx2.post(server.url + "/oauth2/token", data=form).status_code for _ in range(5)]
        assert codes == [400] * 5
    finally:
        server.stop()


@pytest.mark.parametrize("shared", ["postgresql", "sqlite"])
def test_rate_limits_without_redis_live_in_the_database(
    tmp_path: Path, postgres: Postgres, shared: str
) -> None:
    port = free_port()
    config = server_config(port, rate_limits={"enabled": True, "token_per_ip_per_minute": 4})
    if shared == "postgresql":
        config["database_url"] = postgres.create_database(f"rl_{time.monotonic_ns()}")
    else:
        config["workers"] = 2
    server = ServerProcess(tmp_path / "data", port, config)
    server.start()
    try:
        form = {"grant_type": "refresh_token", "client_id": NATIVE, "refresh_token": "a.b"}
        codes = [
            httpx2.post(server.url + "/oauth2/token", data=form).status_code for _ in range(10)
        ]
        # Limits count in fixed one-minute windows, and a loaded machine may cross into the
        # next window during the run: the first four pass either way, and ten requests (under
        # a minute) put five into one window, so a 429 must come.
        assert codes[:4] == [400] * 4 and set(codes) <= {400, 429}, codes
        assert 429 in codes[4:], codes
        # Counted in the database, shared by both processes: five or more in one window.
        rows = server.query("SELECT count FROM rate_limits")
        assert max(r[0] for r in rows) >= 5, rows
    finally:
        server.stop()


def test_workers_health_and_metrics(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["workers"] = 2
    metrics_port = free_port()
    server.config["metrics_port"] = metrics_port
    server.start()
    tokens, _ = tokens_for(server)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda _: refresh(server, tokens["refresh_token"]).status_code, range(40))
        )
    assert statuses == [200] * 40
    assert httpx2.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx2.get(server.url + "/readyz").json()["status"] == "ok"
    # /metrics is on its own port, not on the public one.
    assert httpx2.get(server.url + "/metrics").status_code == 404
    text = httpx2.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    # Counted over both workers: 40 refreshes (+1 code exchange) at the token endpoint.
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("authgear_http_requests_total")
        and 'path="/oauth2/token"' in ln
        and 'status="200"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) == 41.0
    pids = {
        int(p)
        for p in subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)],
            capture_output=True,
            text=True,  # type: ignore[union-attr]
        ).stdout.split()
    }
    assert len(pids) >= 2


def test_key_rotation_retires_old_key(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["key_refresh_interval"] = 1
    server.start()
    tokens, _ = tokens_for(server)
    old_kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    subprocess.run(
        [AUTHGEAR, "keys", "rotate", "--data-dir", str(server.data_dir)], check=True,
        capture_output=True,
    )  # fmt: skip
    listing = subprocess.run(
        [AUTHGEAR, "keys", "list", "--data-dir", str(server.data_dir)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert "retiring at" in rows.pop(old_kid)
    # The new key: published, and signing once two refresh intervals have passed (a slow
    # machine may take that long to run the command).
    (new_row,) = rows.values()
    assert "published, signs from" in new_row or new_row.endswith("signing")
    time.sleep(2.5)
    r = refresh(server, tokens["refresh_token"]).json()
    assert jwt.get_unverified_header(r["access_token"])["kid"] != old_kid
    # Userinfo accepts tokens of both keys (they are recorded, whatever signed them).
    for at in (tokens["access_token"], r["access_token"]):
        assert httpx2.get(server.url + "/oauth2/userinfo", headers=_bearer(at)).status_code == 200
    # Retire the old key now (as if its tokens had all expired): it leaves the JWKS.
    server.query("UPDATE signing_keys SET retire_at = 1 WHERE kid = ?", old_kid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = {k["kid"] for k in httpx2.get(server.url + "/oauth2/jwks").json()["keys"]}
        if old_kid not in kids:
            break
        time.sleep(0.2)
    assert old_kid not in kids and len(kids) == 1


def test_database_outage_fails_fast_and_recovers(tmp_path: Path) -> None:
    # Durable like a real deployment: the outage is a crash (immediate stop).
    pg = start_postgres(tmp_path / "pg", durable=True)
    port = free_port()
    server = ServerProcess(tmp_path / "data", port, server_config(port, database_url=pg.url))
    server.start()
    try:
        tokens, _ = tokens_for(server)
        first = refresh(server, tokens["refresh_token"])
        assert first.status_code == 200
        # The client rotates refresh tokens (public clients' default): go on with the new one.
        tokens["refresh_token"] = first.json()["refresh_token"]
        pg.stop("immediate")
        statuses = []
        started = time.monotonic()
        with httpx2.Client(timeout=15) as http:
            for _ in range(10):
                t0 = time.monotonic()
                r = http.get(
                    server.url + "/_resolver/resolve", headers=_bearer(tokens["access_token"])
                )
                statuses.append(r.status_code)
                assert time.monotonic() - t0 < 5, "a request hung while the database was away"
                r = http.post(
                    server.url + "/oauth2/token",
                    data={"grant_type": "refresh_token", "client_id": NATIVE,
                          "refresh_token": tokens["refresh_token"]},
                )  # fmt: skip
                statuses.append(r.status_code)
            assert http.get(server.url + "/readyz").status_code == 503
            assert http.get(server.url + "/healthz").status_code == 200
        assert set(statuses) == {503}, statuses
        assert time.monotonic() - started < 30
        pg.start()
        back = time.monotonic()
        while True:
            r = refresh(server, tokens["refresh_token"])
            if r.status_code == 200:
                break
            assert r.status_code == 503, r.text
            assert time.monotonic() - back < 2, "not serving 2 s after the database came back"
            time.sleep(0.05)
        # No session was lost.
        assert _resolve(server, r.json()["access_token"]) == "true"
    finally:
        server.stop()
        pg.stop("immediate")
