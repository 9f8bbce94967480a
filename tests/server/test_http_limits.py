"""`authgear serve` protects itself, with no proxy in front: header size and count limits,
deadlines for slow clients, a connection cap under a small file-descriptor limit, a cap on
requests in flight, and a client leaving mid-body logged quietly. Real sockets throughout; the
slow clients really are slow (a byte every second or two)."""

from __future__ import annotations

import concurrent.futures
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from agtest.server import NATIVE, ServerProcess, free_port, server_config

HTTP = {"header_timeout": 3, "body_timeout": 3, "keep_alive_timeout": 5}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    port = free_port()
    config = server_config(port, http=HTTP, log_level="info")
    s = ServerProcess(tmp_path / "data", port, config)
    s.start()
    yield s
    s.stop()


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (or resets it after answering)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def status_of(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert m, response[:200]
    return int(m.group(1))


def test_64_mib_header_is_refused_431_after_reading_little(server: ServerProcess) -> None:
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    chunk = b"a" * 65536
    sent = 0
    with pytest.raises(OSError):  # the server closes the connection: the send fails
        while sent < 64 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
    # The server gave up long before the 64 MiB (limit 64 KiB, plus socket buffers).
    assert sent < 16 * 1024 * 1024
    response = read_all(sock)
    sock.close()
    if response:  # the reset may have raced the response out of the receive buffer
        assert status_of(response) == 431
    # Others are served meanwhile and after.
    assert httpx2.get(server.url + "/healthz").status_code == 200


def test_header_count_and_size_limits_answer_431_and_414(server: ServerProcess) -> None:
    many = {f"x-h{i}": "1" for i in range(101)}
    r = httpx2.get(server.url + "/healthz", headers=many)
    assert r.status_code == 431
    assert r.json()["error"] == "invalid_request"
    assert r.headers["x-content-type-options"] == "nosniff"
    ok = {f"x-h{i}": "1" for i in range(90)}
    assert httpx2.get(server.url + "/healthz", headers=ok).status_code == 200
    r = httpx2.get(server.url + "/healthz", headers={"x-big": "a" * 70_000})
    assert r.status_code == 431
    sock = connect(server)  # (httpx refuses to send such a URL)
    sock.sendall(b"GET /healthz?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(read_all(sock)) == 414
    sock.close()


def _slowloris(server: ServerProcess) -> tuple[bytes, int]:
    """A request head sent a byte every second; returns the answer and the bytes sent."""
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    sent = 0
    try:
        for _ in range(60):
            sock.sendall(b"X")
            sent += 1
            time.sleep(1)
    except OSError:
        pass
    response = read_all(sock)
    sock.close()
    return response, sent


def test_slow_request_heads_get_408_and_are_closed(server: ServerProcess) -> None:
    """50 connections each sending a byte a second (header_timeout 3 s here)."""
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: _slowloris(server), range(50)))
    for response, sent in results:
        # Cut off well before the 60 bytes it meant to trickle in.
        assert sent < 30
        assert response == b"" or status_of(response) == 408
    assert sum(1 for r, _ in results if r) >= 40  # most saw the 408 before the close
    assert httpx2.get(server.url + "/healthz").status_code == 200


def test_a_connection_that_never_asks_is_closed(server: ServerProcess) -> None:
    sock = connect(server)
    assert read_all(sock) == b""  # closed by the server, after header_timeout
    sock.close()


def test_slow_body_gets_408_and_a_quiet_log_line(server: ServerProcess) -> None:
    sock = connect(server)
    head = (
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
    )
    sock.sendall(head + b"grant_type")
    sent = 0
    try:
        for _ in range(60):
            sock.sendall(b"x")
            sent += 1
            time.sleep(1)
    except OSError:
        pass
    response = read_all(sock)
    sock.close()
    assert sent < 30
    assert status_of(response) == 408
    log = _wait_for(server, '"POST /oauth2/token" 408')
    assert "ERROR" not in log and "Traceback" not in log


def test_client_leaving_mid_body_is_a_499_line_not_an_error(server: ServerProcess) -> None:
    sock = connect(server)
    sock.sendall(
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
        b"grant_type=refresh_token&client_id=" + NATIVE.encode()
    )
    time.sleep(0.5)
    sock.close()
    # The admin API reads JSON bodies through FastAPI: the same there.
    sock = connect(server)
    sock.sendall(
        b"POST /_api/admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer agk_x.y\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    time.sleep(0.5)
    sock.close()
    log = _wait_for(server, '"POST /oauth2/token" 499')
    assert "ERROR" not in log and "Traceback" not in log and " 500 " not in log


def test_requests_in_flight_are_capped_with_503(tmp_path: Path) -> None:
    port = free_port()
    http = {**HTTP, "body_timeout": 20, "max_concurrent_requests": 2}
    server = ServerProcess(tmp_path / "data", port, server_config(port, http=http))
    server.start()
    holders = []
    try:
        for _ in range(2):  # two requests in flight, waiting for their bodies
            sock = connect(server)
            sock.sendall(
                b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\na"
            )
            holders.append(sock)
        time.sleep(1)
        r = httpx2.get(server.url + "/healthz")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"] == "temporarily_unavailable"
        for sock in holders:
            sock.sendall(b"b" * 9)  # the bodies complete: the slots free up
            assert status_of(read_all_until_response(sock)) == 400
        assert httpx2.get(server.url + "/healthz").status_code == 200
    finally:
        for sock in holders:
            sock.close()
        server.stop()


def read_all_until_response(sock: socket.socket) -> bytes:
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def test_idle_connections_cannot_exhaust_256_descriptors(tmp_path: Path) -> None:
    """260 idle connections against a server limited to 256 open files: new clients are still
    served (the longest-idle connections make room), nothing fails with EMFILE."""
    port = free_port()
    http = {**HTTP, "header_timeout": 120}  # idle connections are not timed out here
    server = ServerProcess(tmp_path / "data", port, server_config(port, http=http))
    server.start(wrapper=("prlimit", "--nofile=256:256"))
    idle = []
    try:
        for _ in range(260):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        for _ in range(5):
            with httpx2.Client(timeout=30) as http_client:
                assert http_client.get(server.url + "/healthz").status_code == 200
                assert http_client.get(server.url + "/oauth2/jwks").status_code == 200
        assert server.proc is not None and server.proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
        server.stop()
    log = server.log()
    assert "Too many open files" not in log and "Traceback" not in log


def test_nosniff_everywhere_and_hsts_under_https(tmp_path: Path, server: ServerProcess) -> None:
    for path in ("/healthz", "/.well-known/openid-configuration", "/nope", "/login"):
        r = httpx2.get(server.url + path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert "strict-transport-security" not in r.headers  # plain http here
    port = free_port()
    https = ServerProcess(
        tmp_path / "https",
        port,
        server_config(port, public_origin="https://auth.example.com"),
    )
    https.start()
    try:
        for path in ("/healthz", "/oauth2/jwks", "/nope"):
            r = httpx2.get(https.url + path)
            assert r.headers["strict-transport-security"].startswith("max-age=31536000"), path
            assert r.headers["x-content-type-options"] == "nosniff"
    finally:
        https.stop()


def _wait_for(server: ServerProcess, text: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = server.log()
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the log:\n{server.log()[-3000:]}")
