"""The CLI, as a user runs it: separate processes against npm oidc-provider or a scripted
server. Every failure is one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from client_support import OidcProvider, Reply, ScriptedServer, browser_login, key_for

import authgear
from authgear.client import FileTokenStorage, StoredSession
from authgear.client.cli import build_parser


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authgear.client.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_login_whoami_token_fetch_logout(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    assert cli("whoami", env=env).returncode == 1  # nothing configured yet

    login = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authgear.client.cli",
            "login",
            "--no-browser",
            "--endpoint",
            oidc_provider.issuer,
            "--client-id",
            "opaque-client",
            "--prompt",
            "consent",
            "--timeout",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert login.stderr is not None
    url = ""
    for line in login.stderr:
        if line.strip().startswith("http"):
            url = line.strip()
            break
    assert url.startswith(oidc_provider.issuer)
    redirect = dict(parse_qsl(urlsplit(url).query))["redirect_uri"]
    page = httpx2.get(browser_login(url, "erin", stop_prefix=redirect), timeout=30)
    assert "You are signed in" in page.text
    out, _ = login.communicate(timeout=30)
    assert login.returncode == 0
    assert out.strip() == "Signed in as erin"

    # the endpoint and client id were remembered
    who = cli("whoami", env=env)
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["sub"] == "erin"

    token = cli("token", env=env)
    assert token.returncode == 0
    access_token = token.stdout.strip()
    assert access_token

    app = ScriptedServer()
    app.routes["/echo"] = lambda s: Reply(
        201, {"auth": s.headers.get("authorization"), "body": s.body.decode(), "m": s.method}
    )
    try:
        r = cli("fetch", app.url + "/echo", "-d", "hello", "-H", "X-A: 1", "-i", env=env)
        assert r.returncode == 0, r.stderr
        head, body = r.stdout.split("\n\n", 1)  # text mode turned CRLF into LF
        assert head.startswith("HTTP/1.0 201 Created")  # BaseHTTPRequestHandler speaks 1.0
        assert json.loads(body) == {"auth": f"Bearer {access_token}", "body": "hello", "m": "POST"}
        app.routes["/missing"] = lambda s: Reply(404, "nope")
        assert cli("fetch", "--fail", app.url + "/missing", env=env).returncode == 22
    finally:
        app.close()

    out = cli("logout", env=env)
    assert out.returncode == 0 and out.stdout.strip() == "Signed out"
    assert cli("token", env=env).returncode == 1
    assert "not signed in" in cli("whoami", env=env).stderr


# --- messages, never a traceback (issue 17.4) ------------------------------------------------


def one_line_error(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The process failed with ``code`` and exactly one line on stderr, no traceback."""
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def signed_in_cli(server: ScriptedServer, token_dir: Path, client_id: str = "cli-app") -> None:
    """What `authgear login` leaves behind: the remembered settings and a fresh session."""
    storage = FileTokenStorage(token_dir)
    storage.save(key_for(server.url, client_id), fresh_session())
    config = token_dir / "authgear_default_config.json"
    config.write_text(json.dumps({"endpoint": server.url, "client_id": client_id}))
    config.chmod(0o600)


def fresh_session() -> StoredSession:
    now = time.time()
    return StoredSession("rt-1", "at-1", expires_at=now + 3600, refresh_after=now + 3000)


def test_cli_login_endpoint_without_scheme_is_one_line_and_saves_nothing(tmp_path: Path) -> None:
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path / "t"))
    r = cli("login", "--no-browser", "--endpoint", "127.0.0.1:3300", "--client-id", "x", env=env)
    line = one_line_error(r)
    assert line.startswith("error: endpoint must be an http(s) URL") and "127.0.0.1:3300" in line
    assert not (tmp_path / "t").exists() or not list((tmp_path / "t").iterdir())
    # and every later command is still a one-line message, not a traceback
    line = one_line_error(cli("whoami", env=env))
    assert line.startswith("error: no endpoint or client id")


def test_cli_settings_written_by_an_earlier_version_still_work(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """Earlier versions wrote the settings with the umask's mode (0644): readable is fine,
    they are not secret; writable by others is not."""
    signed_in_cli(scripted, tmp_path)
    config = tmp_path / "authgear_default_config.json"
    config.chmod(0o644)
    scripted.routes["/api"] = lambda s: Reply(200, {"auth": s.headers.get("authorization")})
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    r = cli("fetch", scripted.url + "/api", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"auth": "Bearer at-1"}
    config.chmod(0o666)
    assert "chmod 600" in one_line_error(cli("fetch", scripted.url + "/api", env=env))


def test_cli_bad_remembered_endpoint_is_one_line(tmp_path: Path) -> None:
    """Settings saved by an earlier version without validation."""
    (tmp_path / "authgear_default_config.json").write_text(
        json.dumps({"endpoint": "127.0.0.1:3300", "client_id": "x"})
    )
    (tmp_path / "authgear_default_config.json").chmod(0o600)
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    for command in ("whoami", "token", "logout"):
        line = one_line_error(cli(command, env=env))
        assert "endpoint must be an http(s) URL" in line and "what `login` saved" in line


def test_cli_fetch_data_from_missing_file_is_one_line(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    signed_in_cli(scripted, tmp_path)
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    missing = tmp_path / "missing.json"
    line = one_line_error(cli("fetch", "-d", f"@{missing}", scripted.url + "/api", env=env))
    assert line == f"error: cannot read {missing}: No such file or directory"
    assert scripted.count("/api") == 0


def test_cli_fetch_into_a_closed_pipe_exits_141_quietly(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """`authgear fetch URL | head -c 10`: the reader goes away mid-output."""
    signed_in_cli(scripted, tmp_path)
    scripted.routes["/big"] = lambda s: Reply(200, b"x" * (4 << 20))
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    p = subprocess.Popen(
        [sys.executable, "-m", "authgear.client.cli", "fetch", scripted.url + "/big"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.read(10) == b"x" * 10
    p.stdout.close()
    stderr = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141
    assert stderr == ""


def test_cli_fetch_not_signed_in_says_session_ended_and_sends_nothing(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    r = cli(
        "fetch",
        "--endpoint",
        scripted.url,
        "--client-id",
        "cli-app",
        scripted.url + "/api",
        env=env,
    )
    assert one_line_error(r) == "session ended: run `authgear login`"
    assert scripted.count("/api") == 0


def test_cli_fetch_401_with_refused_refresh_says_session_ended(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    signed_in_cli(scripted, tmp_path)
    scripted.routes["/api"] = lambda s: Reply(
        401, {"error": "invalid_token"}, {"www-authenticate": 'Bearer error="invalid_token"'}
    )
    scripted.routes["/oauth2/token"] = lambda s: Reply(400, {"error": "invalid_grant"})
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    r = cli("fetch", scripted.url + "/api", env=env)
    assert one_line_error(r) == "session ended: run `authgear login`"
    assert json.loads(r.stdout) == {"error": "invalid_token"}  # the body is still shown
    assert scripted.count("/oauth2/token") == 1
    # and the session is gone for the next command too
    assert one_line_error(cli("token", env=env)) == "not signed in: run `authgear login`"


def test_cli_fetch_sends_the_sdk_user_agent(scripted: ScriptedServer, tmp_path: Path) -> None:
    signed_in_cli(scripted, tmp_path)
    scripted.routes["/api"] = lambda s: Reply(200, {"ua": s.headers.get("user-agent")})
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    r = cli("fetch", scripted.url + "/api", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ua": f"authgear-python/{authgear.__version__}"}


@pytest.mark.parametrize("how", ["--port", "--redirect-uri"])
def test_cli_login_says_it_waits_and_listens_where_told(
    scripted: ScriptedServer, tmp_path: Path, how: str
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = str(port) if how == "--port" else f"http://127.0.0.1:{port}/callback"
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path / "t"))
    r = cli(
        "login",
        "--no-browser",
        "--endpoint",
        scripted.url,
        "--client-id",
        "cli-app",
        how,
        where,
        "--timeout",
        "1",
        env=env,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    url = next(line.strip() for line in r.stderr.splitlines() if line.strip().startswith("http"))
    expected = f"http://127.0.0.1:{port}/" + ("oauth-redirect" if how == "--port" else "callback")
    assert dict(parse_qsl(urlsplit(url).query))["redirect_uri"] == expected
    assert "Waiting up to 1 s for the sign-in to finish in the browser" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: sign-in did not finish within 1 seconds"
    assert not list((tmp_path / "t").glob("*config*"))  # nothing remembered from a failed login


def test_cli_login_refuses_a_non_loopback_redirect_uri(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    r = cli(
        "login",
        "--no-browser",
        "--endpoint",
        scripted.url,
        "--client-id",
        "x",
        "--redirect-uri",
        "https://evil.example/cb",
        env=env,
    )
    assert "loopback" in one_line_error(r)


def test_cli_port_and_redirect_uri_together_is_a_usage_error(tmp_path: Path) -> None:
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    r = cli("login", "--port", "1", "--redirect-uri", "http://127.0.0.1:2/cb", env=env)
    assert r.returncode == 2 and "not allowed with argument" in r.stderr


def test_cli_every_option_has_help_text() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"login", "whoami", "fetch", "token", "logout"}
    for choice in subparsers._choices_actions:
        assert choice.help, choice.dest
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
    r = cli("fetch", "--help", env=dict(os.environ))
    assert r.returncode == 0 and "session ended" in r.stdout
    r = cli("--version", env=dict(os.environ))
    assert r.returncode == 0 and r.stdout.strip() == f"authgear {authgear.__version__}"


def test_cli_planted_settings_of_another_user_are_refused(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """Another local user's settings file would send the next sign-in to their server."""
    config = tmp_path / "authgear_default_config.json"
    config.write_text(json.dumps({"endpoint": "http://127.0.0.1:9", "client_id": "x"}))
    config.chmod(0o600)
    if os.getuid() == 0:
        os.chown(config, 12345, 12345)
    else:
        pytest.skip("needs root to create a file owned by another user")
    env = dict(os.environ, AUTHGEAR_TOKEN_DIR=str(tmp_path))
    line = one_line_error(cli("whoami", env=env))
    assert line.startswith(f"error: refusing token file {config}: it is owned by uid 12345")
