"""The CLI, as a user runs it: separate processes against npm oidc-provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx2
from client_support import OidcProvider, Reply, ScriptedServer, browser_login


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
