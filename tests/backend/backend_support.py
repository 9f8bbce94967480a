"""Helpers for the backend tests: example backends as real processes, SDK login, forged tokens."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agtest.server import (
    CONFIDENTIAL,
    CONFIDENTIAL_SECRET,
    NATIVE,
    NATIVE_REDIRECT,
    Browser,
    ServerProcess,
    free_port,
    new_email,
)
from authgear import Authgear
from authgear.client import FileTokenStorage

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HERE = Path(__file__).resolve().parent
PASSWORD = "correct horse battery staple"


@dataclass
class BackendProcess:
    """An example backend (or a test app) run as its own process on a free loopback port."""

    argv: list[str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    port_args: tuple[str, ...] = ("--port",)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/api/public") -> BackendProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        argv = [*self.argv, *self.port_args, str(self.port)]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited: {self.log()}")
            try:
                if httpx2.get(self.url + ready_path, timeout=1).status_code < 500:
                    return self
            except httpx2.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"backend did not start: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def example_backend(
    kind: str,
    mode: str,
    endpoint: str,
    tmp: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> BackendProcess:
    script = EXAMPLES / f"{kind}_backend.py"
    argv = [sys.executable, str(script), "--mode", mode, "--endpoint", endpoint, *extra]
    name = "-".join([kind, mode, *(a.strip("-") for a in extra if a.startswith("--"))])
    return BackendProcess(argv, tmp / f"{name}.log", env=dict(env or {})).start()


# --- users and the SDK -------------------------------------------------------------------


def browser_login(server: ServerProcess, authorize_url: str, email: str) -> str:
    browser = Browser(server.url)
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


def sdk_signed_in(
    server: ServerProcess, token_dir: Path, *user_args: str
) -> tuple[Authgear, str, str]:
    """An SDK signed in through the real login form: (authgear, sub, email)."""
    email = new_email()
    server.create_user(email, PASSWORD, *user_args)
    ag = Authgear(NATIVE, server.url, token_storage=FileTokenStorage(token_dir))
    ag.configure()
    url = ag.make_authorize_url(NATIVE_REDIRECT, login_hint=email)
    result = ag.finish_authentication(browser_login(server, url, email))
    return ag, result.sub, email


# --- client_credentials tokens -----------------------------------------------------------

FULL_ACCESS = "https://authgear.com/scopes/full-access"


def client_token(server: ServerProcess, scope: str = FULL_ACCESS) -> tuple[str, str]:
    """A real client_credentials access token of the confidential test client, asking for
    ``scope``: (token, the scope granted). A server that refuses the scope for machine tokens
    (per-client allowed scopes) gives a token without it; the callers' refusals must hold
    either way."""
    auth = (CONFIDENTIAL, CONFIDENTIAL_SECRET)
    data = {"grant_type": "client_credentials", "scope": scope}
    r = httpx2.post(server.url + "/oauth2/token", data=data, auth=auth)
    if r.status_code == 400 and r.json().get("error") == "invalid_scope":
        r = httpx2.post(
            server.url + "/oauth2/token", data={"grant_type": "client_credentials"}, auth=auth
        )
    assert r.status_code == 200, r.text
    body = r.json()
    return str(body["access_token"]), str(body.get("scope", ""))


def forged_client_token(server: ServerProcess, *, gty: bool = True) -> str:
    """A client_credentials-shaped token with full access, signed with the server's own key:
    what a server that grants any scope to machines (or an older one, without ``gty``) issues."""
    kid, key, _ = signing_keys(server)[0]
    claims = access_claims(
        server,
        sub=CONFIDENTIAL,
        client_id=CONFIDENTIAL,
        scope=FULL_ACCESS,
        gty="client-credentials" if gty else None,
        **{"https://authgear.com/claims/user/roles": None},
    )
    return mint(key, kid, claims)


# --- keys and forged tokens --------------------------------------------------------------


def signing_keys(server: ServerProcess) -> list[tuple[str, rsa.RSAPrivateKey, int]]:
    """(kid, private key, created_at) of every key row, newest first, read from SQLite."""
    with sqlite3.connect(server.data_dir / "authgear.db") as db:
        rows = db.execute(
            "SELECT kid, private_pem, created_at FROM signing_keys ORDER BY created_at DESC"
        ).fetchall()
    keys = []
    for kid, pem, created in rows:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        keys.append((kid, key, created))
    return keys


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def access_claims(server: ServerProcess, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": server.url,
        "aud": [server.url],
        "sub": "forged-user",
        "client_id": NATIVE,
        "scope": "openid offline_access",
        "iat": now,
        "exp": now + 600,
        "jti": "forged",
        "https://authgear.com/claims/user/roles": ["admin"],
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def mint(
    key: rsa.RSAPrivateKey, kid: str, claims: dict[str, Any], typ: str = "at+jwt", **headers: Any
) -> str:
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": typ, **headers})


# --- a stand-in Authgear on a real socket -------------------------------------------------


class DocServer:
    """A small HTTP server on a loopback port that serves canned answers by path, or
    misbehaves on purpose, for what the real server never does (weak keys, a wrong issuer,
    oversized or stalling documents).

    ``routes[path]`` is ``("json", obj)``, ``("headers", {name: value})`` (an empty 200 with
    those headers), ``("stall-after", (content_length or None, n_bytes))`` (send the headers and
    ``n_bytes`` of body, then stall until the server stops)."""

    def __init__(self, port: int | None = None) -> None:
        import http.server
        import threading

        self.routes: dict[str, tuple[str, Any]] = {}
        self.hits: dict[str, int] = {}
        self.stopping = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                outer.hits[path] = outer.hits.get(path, 0) + 1
                kind, value = outer.routes.get(path, ("missing", None))
                if kind == "json":
                    body = json.dumps(value).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif kind == "headers":
                    self.send_response(200)
                    for name, v in value.items():
                        self.send_header(name, v)
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif kind == "stall-after":
                    length, n_bytes = value
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    if length is not None:
                        self.send_header("content-length", str(length))
                    self.end_headers()
                    try:
                        for _ in range(n_bytes // 65536):
                            self.wfile.write(b" " * 65536)
                        self.wfile.flush()
                    except OSError:
                        return
                    outer.stopping.wait(60)
                else:
                    self.send_error(404)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
