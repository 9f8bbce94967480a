"""Restart on the same data folder, rate limits, lockout, logs without secrets, the CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import httpx2
import pytest

from agtest.server import (
    AUTHGEAR,
    NATIVE,
    Browser,
    Flow,
    ServerProcess,
    exchange,
    free_port,
    login,
    new_email,
    refresh,
    tokens_for,
)

PASSWORD = "correct horse battery"


def test_restart_keeps_users_sessions_tokens_and_keys(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.start()
    email = new_email()
    cb, flow, browser = login(server, email, PASSWORD, signup=True)
    tokens = exchange(server, cb["code"], flow).json()
    jwks = httpx2.get(server.url + "/oauth2/jwks").json()
    server.stop()

    server.start()
    assert httpx2.get(server.url + "/oauth2/jwks").json() == jwks
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert httpx2.get(server.url + "/oauth2/userinfo", headers=auth).json()["email"] == email
    assert refresh(server, tokens["refresh_token"]).status_code == 200
    # The browser session (cookie) survived too: authorize skips the form.
    r = browser.authorize(**Flow.new().params())
    assert r.status_code == 303 and "code=" in r.headers["location"]
    # And the user can log in again with the password.
    cb2, _, b2 = login(server, email, PASSWORD)
    assert "code" in cb2
    browser.close()
    b2.close()
    if server.backend == "sqlite":
        # The database holds the signing keys.
        assert stat.S_IMODE(os.stat(server.data_dir / "authgear.db").st_mode) == 0o600


def test_token_rate_limit(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["rate_limits"] = {"enabled": True, "token_per_ip_per_minute": 5}
    server.start()
    codes = [
        httpx2.post(
            server.url + "/oauth2/token",
            data={"grant_type": "refresh_token", "client_id": NATIVE, "refresh_token": "a.b"},
        ).status_code
        for _ in range(7)
    ]
    assert codes[:5] == [400] * 5
    assert codes[5:] == [429, 429]
    r = httpx2.post(server.url + "/oauth2/token", data={"grant_type": "refresh_token"})
    assert r.json() == {"error": "x_rate_limited", "error_description": "too many requests"}
    assert r.headers["retry-after"]


def test_lockout_after_failed_passwords(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["rate_limits"] = {"enabled": True, "password_failures_per_ip_per_minute": 100}
    server.config["lockout"] = {"max_attempts": 3, "history_duration": 300, "minimum_duration": 60}
    server.start()
    email = new_email()
    server.create_user(email, PASSWORD)
    browser = Browser(server.url)
    page = browser.authorize(**Flow.new().params()).headers["location"]
    statuses = [browser.submit(page, email, "wrong-password").status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    locked = browser.submit(page, email, PASSWORD)
    assert locked.status_code == 429
    assert "Too many attempts" in locked.text
    # An email with no account locks the same way: lockout reveals nothing.
    ghost = new_email()
    for _ in range(3):
        browser.submit(page, ghost, "wrong-password")
    assert browser.submit(page, ghost, "wrong-password").status_code == 429
    browser.close()


def test_password_failures_per_ip(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["rate_limits"] = {"enabled": True, "password_failures_per_ip_per_minute": 2}
    server.config["lockout"] = {"enabled": False}
    server.start()
    browser = Browser(server.url)
    page = browser.authorize(**Flow.new().params()).headers["location"]
    statuses = [browser.submit(page, new_email(), "wrong-password").status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    browser.close()


def test_logs_hold_no_secrets(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["log_level"] = "debug"
    server.start()
    tokens, _ = tokens_for(server)
    refresh(server, tokens["refresh_token"])
    httpx2.get(
        server.url + "/oauth2/userinfo",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    httpx2.get(server.url + "/oauth2/end_session", params={"id_token_hint": tokens["id_token"]})
    httpx2.post(server.url + "/oauth2/revoke", data={"token": tokens["refresh_token"]})
    server.stop()
    log = server.log()
    assert log  # the server did log something
    for secret in (
        tokens["access_token"],
        tokens["refresh_token"].split(".")[1],
        tokens["id_token"],
        PASSWORD,
    ):
        assert secret not in log


def test_resolver_on_its_own_port(fresh_server: ServerProcess) -> None:
    server = fresh_server
    rport = free_port()
    server.config["resolver_port"] = rport
    server.start()
    tokens, _ = tokens_for(server)
    r = httpx2.get(
        f"http://127.0.0.1:{rport}/_resolver/resolve",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert r.headers["x-authgear-session-valid"] == "true"
    assert httpx2.get(f"http://127.0.0.1:{rport}/oauth2/jwks").status_code == 404


def run_cli(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUTHGEAR, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_cli_users_create(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.write_config()
    d = str(server.data_dir)
    ok = run_cli(
        "users",
        "create",
        "Someone@Example.com",
        "--password-stdin",
        "--data-dir",
        d,
        input=PASSWORD + "\n",
    )
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.strip()) == 36
    dup = run_cli(
        "users",
        "create",
        "someone@example.com",
        "--password-stdin",
        "--data-dir",
        d,
        input=PASSWORD + "\n",
    )
    assert dup.returncode == 1
    assert dup.stderr.strip() == "authgear: a user with email someone@example.com already exists"
    short = run_cli(
        "users", "create", "x@example.com", "--password-stdin", "--data-dir", d, input="short\n"
    )
    assert short.returncode == 1 and "at least 8" in short.stderr
    bad = run_cli(
        "users", "create", "nope", "--password-stdin", "--data-dir", d, input=PASSWORD + "\n"
    )
    assert bad.returncode == 1 and "not a valid email" in bad.stderr
    no_tty = run_cli("users", "create", "y@example.com", "--data-dir", d, input="")
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr
    server.start()
    cb, _, b = login(server, "someone@example.com", PASSWORD)
    assert "code" in cb
    b.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("clients: [", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("log_level: loud\n", "log_level"),
        ("resolver_port: http\n", "resolver_port"),
        ("clients:\n  - id: a\n    type: confidential\n", "client_secret_hash"),
        ("unknown_key: 1\n", "unknown_key"),
        ("public_origin: ftp://x\n", "public_origin"),
    ],
)
def test_bad_config_is_one_line(tmp_path, content: str, message: str) -> None:
    (tmp_path / "authgear.yaml").write_text(content)
    r = run_cli("serve", "--data-dir", str(tmp_path), "--port", str(free_port()))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr


def test_first_run_creates_config_and_env_overrides(tmp_path) -> None:
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [AUTHGEAR, "serve", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "AUTHGEAR_PUBLIC_ORIGIN": "https://auth.example.com"},
    )
    try:
        first = [proc.stdout.readline() for _ in range(4)]  # type: ignore[union-attr]
        assert "Created" in first[0]
        assert first[1].strip() == "Authgear endpoint: https://auth.example.com"
        assert "client native-" in first[2] and "client web-" in first[3]
        import time

        for _ in range(100):
            try:
                doc = httpx2.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration").json()
                break
            except httpx2.TransportError:
                time.sleep(0.1)
        assert doc["issuer"] == "https://auth.example.com"
        assert doc["token_endpoint"] == "https://auth.example.com/oauth2/token"
        config = (data / "authgear.yaml").read_text()
        assert config.startswith("# Authgear server configuration.")
        assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(data / "authgear.yaml").st_mode) == 0o600
    finally:
        proc.terminate()
        proc.wait(10)


def test_hash_secret() -> None:
    r = run_cli("hash-secret", "--stdin", input="abc\n")
    assert (
        r.stdout.strip() == "client_secret_hash: sha256:"
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert sys.executable


def test_token_rate_limit_per_user(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["rate_limits"] = {"enabled": True, "token_per_user_per_minute": 3}
    server.start()
    tokens, _ = tokens_for(server)  # the code exchange counts as one
    statuses = [refresh(server, tokens["refresh_token"]).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    # Another user is not affected.
    other, _ = tokens_for(server)
    assert refresh(server, other["refresh_token"]).status_code == 200
