"""Running it as an operator does: Redis killed and restarted, PostgreSQL restarted under
load, logs and metrics one can alert on, SIGTERM under load, the admin API and /metrics kept
off the public port, and nginx terminating TLS in front (the config docs/deployment.md
shows). Real processes throughout."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agtest.server import (
    AUTHGEAR,
    NATIVE,
    ROTATING,
    Browser,
    Flow,
    ServerProcess,
    free_port,
    login,
    new_email,
    refresh,
    server_config,
    tokens_for,
)
from agtest.services import Postgres, start_postgres, start_redis
from agtest.tls import certificates

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
BAD_REFRESH = {"grant_type": "refresh_token", "client_id": NATIVE, "refresh_token": "a.b"}


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text; missing is an assertion error."""
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")) and not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in the metrics")


def wait_for(predicate: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.strip()]


# -- 2. Redis away and back ----------------------------------------------------------------------


def test_redis_away_falls_back_to_the_database_and_comes_back(
    tmp_path: Path, postgres: Postgres
) -> None:
    import redis as redis_client

    redis = start_redis(tmp_path / "redis")
    port, mport = free_port(), free_port()
    config = server_config(
        port,
        database_url=postgres.create_database(f"redis_{time.monotonic_ns()}"),
        redis_url=redis.url,
        metrics_port=mport,
        rate_limits={"enabled": True, "token_per_ip_per_minute": 8},
        log_level="info",
    )
    server = ServerProcess(tmp_path / "data", port, config)
    server.start()

    def post() -> int:
        return httpx2.post(server.url + "/oauth2/token", data=BAD_REFRESH).status_code

    def in_redis() -> int:
        r = redis_client.Redis.from_url(redis.url)
        return sum(int(r.get(k) or 0) for k in r.keys("rl:token:*"))

    try:
        assert [post(), post()] == [400, 400]
        assert in_redis() == 2
        redis.proc.kill()
        redis.proc.wait(10)
        tokens, _ = tokens_for(server)  # signing in works meanwhile
        assert "access_token" in tokens
        # Redis is away: no 500; the limit still holds, counted in the database.
        statuses = [post() for _ in range(20)]
        assert 500 not in statuses and set(statuses) == {400, 429}, statuses
        assert server.query("SELECT count(*) FROM rate_limits")[0][0] >= 1
        ready = httpx2.get(server.url + "/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["redis"].startswith("unavailable")
        text = httpx2.get(f"http://127.0.0.1:{mport}/metrics").text
        assert metric(text, "authgear_redis_errors_total") >= 1
        assert server.log().count("redis unavailable") == 1  # once per outage, not per request

        redis = start_redis(tmp_path / "redis", port=redis.port)
        wait_for(
            lambda: httpx2.get(server.url + "/readyz").json()["checks"]["redis"] == "ok",
            "readyz to see redis again",
        )
        assert post() in (400, 429)
        assert in_redis() == 1  # counted in Redis again
        assert "redis is back" in server.log()

        # Redis restarted between two requests: the pooled connection is dead; the request
        # is retried on a new one, counted in Redis, and nothing is logged as an outage.
        redis.proc.kill()
        redis.proc.wait(10)
        redis = start_redis(tmp_path / "redis", port=redis.port)
        assert post() in (400, 429)
        assert in_redis() == 1
        assert server.log().count("redis unavailable") == 1
        assert "Traceback" not in server.log() and " 500 " not in server.log()
    finally:
        server.stop()
        redis.stop()


# -- 3. every 5xx has its cause in the log ------------------------------------------------------


def test_postgresql_restart_gives_503s_each_logged_with_its_cause(tmp_path: Path) -> None:
    pg = start_postgres(tmp_path / "pg", durable=True)
    port = free_port()
    config = server_config(port, database_url=pg.url, log_format="json", log_level="info")
    server = ServerProcess(tmp_path / "data", port, config)
    server.start()
    try:
        tokens, _ = tokens_for(server)
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx2.Client(timeout=30) as http:
                while not stop.is_set():
                    r = http.post(
                        server.url + "/oauth2/token",
                        data={**BAD_REFRESH, "refresh_token": tokens["refresh_token"]},
                    )
                    statuses.append(r.status_code)
                    r = http.get(
                        server.url + "/_resolver/resolve",
                        headers={"Authorization": f"Bearer {tokens['access_token']}"},
                    )
                    statuses.append(r.status_code)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        pg.stop("fast")  # "the database system is shutting down" for what is in flight
        time.sleep(1)
        pg.start()  # "... is starting up" for connections made meanwhile
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        server.stop()
        pg.stop("immediate")
    assert 500 not in statuses, sorted(set(statuses))
    assert 503 in statuses and 200 in statuses
    lines = json_lines(server)
    by_request: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        if "request_id" in line:
            by_request.setdefault(line["request_id"], []).append(line)
    failed = [
        rid
        for rid, entries in by_request.items()
        if any(e["logger"] == "authgear.access" and e["status"] >= 500 for e in entries)
    ]
    assert failed
    for rid in failed:
        causes = [e for e in by_request[rid] if e["logger"] != "authgear.access"]
        assert causes, f"request {rid} answered 5xx without a logged cause"
        assert any("database unavailable" in c["message"] for c in causes), causes


def test_a_real_server_error_is_one_error_line_with_its_cause(
    tmp_path: Path, postgres: Postgres
) -> None:
    """A damaged schema (a table dropped by hand) is no outage: a 500, and one ERROR line
    naming the exception and where, without the SQL or the request's parameters."""
    port = free_port()
    url = postgres.create_database(f"err_{time.monotonic_ns()}")
    config = server_config(port, database_url=url, log_format="json", log_level="info")
    server = ServerProcess(tmp_path / "data", port, config)
    server.start()
    try:
        server.query("DROP TABLE auth_flows")
        flow = Flow.new()
        r = httpx2.get(
            server.url + "/oauth2/authorize",
            params=flow.params(login_hint="secret-hint@example.com"),
            headers={"X-Request-ID": "rid-broken-schema"},
        )
    finally:
        server.stop()
    assert r.status_code == 500 and r.json()["error"] == "server_error"
    mine = [e for e in json_lines(server) if e.get("request_id") == "rid-broken-schema"]
    errors = [e for e in mine if e["level"] == "error"]
    assert len(errors) == 1, mine
    assert re.search(r"ProgrammingError at authgear/server/\S+:\d+ in \w+", errors[0]["message"])
    assert "auth_flows" not in server.log() and "secret-hint" not in server.log()
    assert any(e["logger"] == "authgear.access" and e["status"] == 500 for e in mine)


# -- 4 and 5. logs and metrics an operator can use -------------------------------------------


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Any]:
    """A server (PostgreSQL, JSON logs, metrics on their own port) after a day's events:
    sign-ins ok and failed, a lockout, a rate limit, a refresh token reused, revocations."""
    port, mport = free_port(), free_port()
    config = server_config(
        port,
        database_url=postgres.create_database(f"obs_{time.monotonic_ns()}"),
        metrics_port=mport,
        log_format="json",
        log_level="info",
        trusted_proxies=["127.0.0.1"],
        database_pool_size=4,
        database_max_overflow=2,
        rate_limits={"enabled": True, "password_failures_per_ip_per_minute": 3},
        lockout={"max_attempts": 2},
    )
    server = ServerProcess(tmp_path_factory.mktemp("observed"), port, config)
    server.start()
    seen: dict[str, Any] = {"metrics_port": mport}
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    cb, flow, b = login(server, email, PASSWORD)  # sign-in ok
    b.close()
    tokens = httpx2.post(
        server.url + "/oauth2/token",
        data={"grant_type": "authorization_code", "client_id": flow.client_id, "code": cb["code"],
              "redirect_uri": flow.redirect_uri, "code_verifier": flow.verifier},
    ).json()  # fmt: skip
    browser = Browser(server.url)
    browser.http.headers["X-Request-ID"] = "rid-wrong-password"
    page = browser.authorize(**Flow.new().params()).headers["location"]
    seen["wrong"] = browser.submit(page, email, "wrong-password-1").status_code
    del browser.http.headers["X-Request-ID"]
    seen["wrong2"] = browser.submit(page, email, "wrong-password-2").status_code
    seen["locked"] = browser.submit(page, email, PASSWORD).status_code
    seen["limited"] = browser.submit(page, new_email(), "wrong-password-3").status_code
    seen["limited2"] = browser.submit(page, new_email(), "wrong-password-4").status_code
    browser.close()
    rotating, _ = tokens_for(server, ROTATING)
    assert refresh(server, rotating["refresh_token"], ROTATING).status_code == 200
    time.sleep(3)  # past the rotation grace period
    seen["reuse"] = refresh(server, rotating["refresh_token"], ROTATING).json()
    httpx2.post(server.url + "/oauth2/revoke", data={"token": tokens["refresh_token"]})
    r = httpx2.get(server.url + "/nope-not-a-route", headers={"X-Forwarded-For": "203.0.113.9"})
    seen["forwarded_rid"] = r.headers["x-request-id"]
    seen["bad_rid"] = httpx2.get(
        server.url + "/healthz", headers={"X-Request-ID": "two words"}
    ).headers["x-request-id"]
    key = subprocess.run(
        [AUTHGEAR, "admin", "keys", "create", "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    admin = {"Authorization": f"Bearer {key}"}
    assert httpx2.get(f"{server.url}/_api/admin/users/{user_id}", headers=admin).status_code == 200
    sessions = httpx2.get(f"{server.url}/_api/admin/users/{user_id}/sessions", headers=admin)
    for s in sessions.json()["sessions"]:
        httpx2.delete(f"{server.url}/_api/admin/sessions/{s['id']}", headers=admin)
    httpx2.get(f"{server.url}/portal/users/{user_id}")
    seen["metrics"] = httpx2.get(f"http://127.0.0.1:{mport}/metrics").text
    seen["secrets"] = [
        PASSWORD,
        "wrong-password-1",
        email,
        tokens["access_token"],
        tokens["refresh_token"].split(".")[1],
        rotating["refresh_token"],
        key,
    ]
    time.sleep(0.5)
    server.stop()
    seen["server"] = server
    yield seen


def test_logs_are_json_lines_with_request_ids_and_auth_events(observed: Any) -> None:
    server: ServerProcess = observed["server"]
    text = server.log()
    lines = json_lines(server)  # every line, uvicorn's and the banner too, is one JSON object
    assert any(e["logger"] == "uvicorn.error" and "startup complete" in e["message"] for e in lines)
    assert any(e.get("issuer") == server.url for e in lines)  # the banner
    for secret in observed["secrets"]:
        assert secret not in text
    events = {e.get("event") for e in lines}
    assert {
        "sign_in.success",
        "sign_in.failure",
        "sign_in.locked_out",
        "refresh_token.reuse_detected",
        "session.revoked",
    } <= events
    revoked_by = {e["by"] for e in lines if e.get("event") == "session.revoked"}
    assert revoked_by == {"client", "api_key"}
    # The client's request id is on every line of its request: the event and the access line.
    mine = [e for e in lines if e.get("request_id") == "rid-wrong-password"]
    assert {e.get("event") for e in mine} >= {"sign_in.failure"}
    assert any(e["logger"] == "authgear.access" and e["status"] == 401 for e in mine)
    # A generated id is echoed and logged; the client behind a trusted proxy is named.
    forwarded = [e for e in lines if e.get("request_id") == observed["forwarded_rid"]]
    assert re.fullmatch(r"[0-9a-f]{32}", observed["forwarded_rid"])
    assert forwarded[0]["client_ip"] == "203.0.113.9" and forwarded[0]["status"] == 404
    # An id that is not a plain token is replaced.
    assert re.fullmatch(r"[0-9a-f]{32}", observed["bad_rid"])
    assert observed["reuse"]["error"] == "invalid_grant"


def test_metrics_an_operator_can_alert_on(observed: Any) -> None:
    text = observed["metrics"]
    assert observed["wrong"] == 401 and observed["locked"] == 429
    assert 429 in (observed["limited"], observed["limited2"])
    assert metric(text, "authgear_tokens_issued_total", grant_type="authorization_code") >= 2
    assert metric(text, "authgear_tokens_issued_total", grant_type="refresh_token") >= 1
    assert metric(text, "authgear_sign_ins_total", result="success") >= 1
    assert metric(text, "authgear_sign_ins_total", result="failure") >= 2
    assert metric(text, "authgear_sign_in_lockouts_total") >= 1
    assert metric(text, "authgear_rate_limited_total", bucket="password") >= 1
    assert metric(text, "authgear_refresh_token_reuse_total") == 1
    assert metric(text, "authgear_sessions_revoked_total", by="api_key") >= 1
    assert metric(text, "authgear_db_pool_size") == 6  # database_pool_size 4 + overflow 2
    assert metric(text, "authgear_db_pool_connections_in_use") >= 0
    assert metric(text, "authgear_db_pool_waiting") >= 0
    assert metric(text, "authgear_redis_errors_total") == 0
    assert metric(text, "authgear_process_resident_memory_bytes") > 10_000_000
    assert metric(text, "authgear_process_open_fds") > 0
    # Admin and portal routes by template; unknown paths are "other", never the path.
    assert metric(text, "authgear_http_requests_total", path="/_api/admin/users/{user_id}") >= 1
    assert metric(text, "authgear_http_requests_total", path="/portal/users/{user_id}") >= 1
    assert metric(text, "authgear_http_requests_total", path="other", status="404") >= 1
    assert "nope-not-a-route" not in text


# -- 6. graceful shutdown ---------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_then_finishes_in_flight_requests_without_resets(
    workers: int, tmp_path: Path
) -> None:
    """Clients behave like a load balancer: they keep sending until /readyz says 503, then
    send nothing new. No request may fail: not those sent before or during the drain, nor a
    slow one still in flight when the listener closes."""
    port = free_port()
    config = server_config(
        port,
        workers=workers,
        shutdown={"drain_seconds": 3, "grace_seconds": 30},
        http={"body_timeout": 60},
    )
    server = ServerProcess(tmp_path / "data", port, config)
    server.start()
    assert server.proc is not None
    outcomes: list[str] = []
    readiness: list[httpx2.Response] = []
    out_of_rotation = threading.Event()

    def balancer_health_check() -> None:
        with httpx2.Client(timeout=30) as http:
            while not out_of_rotation.is_set():
                r = http.get(server.url + "/readyz")
                readiness.append(r)
                if r.status_code != 200:
                    out_of_rotation.set()
                time.sleep(0.2)

    def load() -> None:
        with httpx2.Client(timeout=30) as http:
            while not out_of_rotation.is_set():
                try:
                    outcomes.append(str(http.get(server.url + "/oauth2/jwks").status_code))
                except httpx2.TransportError as e:
                    outcomes.append(f"broken: {type(e).__name__}")

    body = f"grant_type=refresh_token&client_id={NATIVE}&refresh_token=a.b".encode()
    slow = socket.create_connection(("127.0.0.1", port), timeout=60)
    slow.sendall(
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    threads = [threading.Thread(target=load) for _ in range(4)]
    threads.append(threading.Thread(target=balancer_health_check))
    for t in threads:
        t.start()
    time.sleep(1)
    server.proc.send_signal(signal.SIGTERM)
    # Requests the balancer routed before it noticed are still served, and close their
    # connection so that nothing stays idle on a process about to exit.
    out_of_rotation.wait(30)
    late = httpx2.get(server.url + "/oauth2/jwks")
    # The slow request stays in flight across the drain and the shutdown: a byte every 0.1 s.
    for byte in body:
        slow.sendall(bytes([byte]))
        time.sleep(0.1)
    answer = b""
    while chunk := slow.recv(65536):
        answer += chunk
    slow.close()
    code = server.proc.wait(60)
    for t in threads:
        t.join(60)
    assert answer.startswith(b"HTTP/1.1 400 ") and b'"invalid_grant"' in answer
    assert outcomes and set(outcomes) == {"200"}, sorted(set(outcomes))
    assert late.status_code == 200 and late.headers["connection"] == "close"
    assert readiness[0].status_code == 200 and readiness[-1].status_code == 503
    assert readiness[-1].json()["status"] == "draining"
    assert code == 0
    with pytest.raises(httpx2.ConnectError):  # gone: refused, not hanging
        httpx2.get(server.url + "/healthz")
    assert "Traceback" not in server.log()
    server.proc = None


# -- 10. exposure: admin API, portal and /metrics off the public port -------------------------


def test_admin_and_metrics_can_be_kept_off_the_public_port(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    token = "metrics-token-for-tests-0123456789"
    config = server_config(port, admin_port=admin_port, metrics_token=token)
    server = ServerProcess(tmp_path / "data", port, config)
    server.start()
    admin_url = f"http://127.0.0.1:{admin_port}"
    try:
        key = subprocess.run(
            [AUTHGEAR, "admin", "keys", "create", "--data-dir", str(server.data_dir)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx2.get(server.url + "/_api/admin/users", headers=auth).status_code == 404
        assert httpx2.get(server.url + "/portal").status_code == 404
        assert httpx2.get(server.url + "/settings/sessions").status_code == 303  # a user's own
        assert httpx2.get(admin_url + "/_api/admin/users", headers=auth).status_code == 200
        assert httpx2.get(admin_url + "/portal/users").headers["location"].startswith("/login")
        assert httpx2.get(admin_url + "/login").status_code == 200
        assert httpx2.get(admin_url + "/oauth2/jwks").status_code == 404
        # /metrics on the public port only with its bearer token.
        assert httpx2.get(server.url + "/metrics").status_code == 401
        wrong = {"Authorization": "Bearer metrics-token-for-tests-wrong-0000"}
        assert httpx2.get(server.url + "/metrics", headers=wrong).status_code == 401
        good = httpx2.get(server.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        assert good.status_code == 200 and "authgear_http_requests_total" in good.text
        server.stop()
        server.config = server_config(port, admin_enabled=False)
        server.start()
        assert httpx2.get(server.url + "/_api/admin/users", headers=auth).status_code == 404
        assert httpx2.get(server.url + "/portal").status_code == 404
        assert httpx2.get(server.url + "/metrics").status_code == 404  # off by default
    finally:
        server.stop()


# -- 10. nginx terminating TLS in front, as docs/deployment.md shows -------------------------

NGINX_EXAMPLE = ROOT / "examples" / "nginx" / "authgear-server.conf"


def _nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        pytest.skip("nginx is not installed (scripts/test installs it)")
    return found


def test_nginx_example_terminates_tls_denies_metrics_and_keeps_queries_out_of_logs(
    tmp_path: Path,
) -> None:
    binary = _nginx_binary()
    nginx_port, port = free_port(), free_port()
    token = "metrics-token-for-tests-0123456789"
    config = server_config(
        port,
        public_origin=f"https://127.0.0.1:{nginx_port}",
        trusted_proxies=["127.0.0.1"],
        metrics_token=token,
        log_level="info",
    )
    server = ServerProcess(tmp_path / "data", port, config)
    server.start()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    ca, cert, key = certificates(prefix)
    text = NGINX_EXAMPLE.read_text()
    for name, value in {
        "PREFIX": str(prefix),
        "LISTEN": f"127.0.0.1:{nginx_port}",
        "SERVER_NAME": "127.0.0.1",
        "AUTHGEAR": f"127.0.0.1:{port}",
        "CERT": str(cert),
        "KEY": str(key),
    }.items():
        text = text.replace("${" + name + "}", value)
    if os.geteuid() == 0:
        text = "user root;\n" + text
    (prefix / "nginx.conf").write_text(text)
    cmd = [
        binary,
        "-p",
        str(prefix),
        "-c",
        str(prefix / "nginx.conf"),
        "-e",
        str(prefix / "error.log"),
    ]
    subprocess.run([*cmd, "-t", "-q"], check=True, capture_output=True)
    nginx = subprocess.Popen([*cmd, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    # A client on another address than the proxy's, to see it named in the server's log.
    transport = httpx2.HTTPTransport(
        verify=ssl.create_default_context(cafile=str(ca)), local_address="127.0.0.2"
    )
    base = f"https://127.0.0.1:{nginx_port}"
    try:
        with httpx2.Client(transport=transport, base_url=base, timeout=10) as http:
            doc = wait_for(
                lambda: _try(lambda: http.get("/.well-known/openid-configuration")),
                "nginx to start",
            )
            assert doc.status_code == 200 and doc.json()["issuer"] == base
            assert doc.headers["strict-transport-security"].startswith("max-age=")
            assert doc.headers["x-content-type-options"] == "nosniff"
            rid = doc.headers["x-request-id"]  # nginx's $request_id, passed through
            denied = http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert denied.status_code == 403
            http.get("/oauth2/end_session", params={"id_token_hint": "SECRET-HINT", "state": "s"})
            token_r = http.post("/oauth2/token", data=BAD_REFRESH)
            assert token_r.status_code == 400
    finally:
        nginx.terminate()
        nginx.wait(10)
        server.stop()
    access = (prefix / "access.log").read_text()
    ours = server.log()
    assert "/oauth2/end_session" in access and "SECRET-HINT" not in access
    assert "SECRET-HINT" not in ours
    assert rid in access and f"[request_id={rid}]" in ours
    assert re.search(r'127\.0\.0\.2 "GET /\.well-known/openid-configuration" 200', ours)


def _try(fn: Any) -> Any:
    try:
        return fn()
    except httpx2.TransportError:
        return None


def test_docs_nginx_example_is_the_tested_one() -> None:
    """docs/deployment.md shows examples/nginx/authgear-server.conf's server block."""
    docs = (ROOT / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", docs, re.S)
    assert blocks
    example = {" ".join(line.split()) for line in NGINX_EXAMPLE.read_text().splitlines()}
    shown = [" ".join(line.split()) for line in blocks[0].splitlines()]
    placeholders = ("server ", "server_name", "listen", "ssl_certificate", "access_log")
    missing = [
        line
        for line in shown
        if line and not line.startswith(("#", *placeholders)) and line not in example
    ]
    assert missing == []
    assert "location = /metrics {" in shown and "deny all;" in shown


# -- 7. connections spread over the workers ----------------------------------------------------


def _children(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
                todo.append(int(stat.parent.name))
    return found


def _connections_per_process(port: int, pids: list[int]) -> dict[int, int]:
    """Established server-side TCP connections on ``port`` held by each of ``pids`` (/proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    counts = {}
    for pid in pids:
        n = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                n += 1
        counts[pid] = n
    return counts


def test_a_burst_of_keep_alive_connections_is_shared_evenly_by_the_workers(
    tmp_path: Path,
) -> None:
    """A pool of keep-alive connections opened at once (a proxy's, a load balancer's) is split
    evenly between the worker processes, not at random (docs/benchmarks.md: a random split
    sets the busier worker's queue as everyone's tail latency)."""
    port = free_port()
    server = ServerProcess(tmp_path / "data", port, server_config(port, workers=2))
    server.start()
    assert server.proc is not None
    clients: list[socket.socket] = []
    try:
        # Both workers up: each has answered a connection of its own.
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as probe:
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert probe.recv(65536).startswith(b"HTTP/1.1 200")
                held = _connections_per_process(port, _children(server.proc.pid))
                seen |= {pid for pid, n in held.items() if n}
        assert len(seen) == 2, seen
        time.sleep(0.5)  # the probes' connections are gone from both counts
        for _ in range(64):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        for c in clients:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in clients:
            assert c.recv(65536).startswith(b"HTTP/1.1 200")
        counts = _connections_per_process(port, _children(server.proc.pid))
        held = sorted(n for n in counts.values() if n)  # the workers holding connections
        assert sum(held) == 64, counts
        assert len(held) == 2 and held[-1] - held[0] <= 4, counts
    finally:
        for c in clients:
            c.close()
        server.stop()
