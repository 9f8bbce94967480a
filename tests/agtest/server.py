"""Start ``authgear serve`` on a free loopback port with a temp data folder."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import yaml

NATIVE = "test-native"
WEB = "test-web"
ROTATING = "test-rotating"
CONFIDENTIAL = "test-confidential"
OPAQUE = "test-opaque"
# A public client that may use the device authorization grant (RFC 8628).
DEVICE = "test-device"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CONFIDENTIAL_SECRET = "s3cr3t-for-tests-only-0123456789"
NATIVE_REDIRECT = "http://127.0.0.1/callback"
WEB_REDIRECT = "https://app.example.com/callback"
WEB_ORIGIN = "https://app.example.com"
# Scopes the confidential client may ask for in a client_credentials token.
API_READ_SCOPE = "https://api.example.com/read"
API_WRITE_SCOPE = "https://api.example.com/write"
AUTHGEAR = str(Path(sys.executable).with_name("authgear"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_config(port: int, **overrides: Any) -> dict[str, Any]:
    secret_hash = "sha256:" + hashlib.sha256(CONFIDENTIAL_SECRET.encode()).hexdigest()
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "clients": [
            {
                "id": NATIVE,
                "name": "Native test app",
                "redirect_uris": [NATIVE_REDIRECT],
                "post_logout_redirect_uris": ["http://127.0.0.1/logged-out"],
            },
            {
                "id": WEB,
                "redirect_uris": [WEB_REDIRECT],
                "post_logout_redirect_uris": ["https://app.example.com/"],
                "allowed_origins": [WEB_ORIGIN],
            },
            {
                "id": ROTATING,
                "redirect_uris": [NATIVE_REDIRECT],
                "refresh_token_rotation": True,
                "refresh_token_rotation_grace_period": 2,
            },
            {
                "id": CONFIDENTIAL,
                "type": "confidential",
                "client_secret_hash": secret_hash,
                "redirect_uris": [WEB_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
                "allowed_scopes": [API_READ_SCOPE, API_WRITE_SCOPE],
            },
            {
                "id": DEVICE,
                "name": "Device test app",
                "redirect_uris": [NATIVE_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token", DEVICE_GRANT],
            },
            {
                "id": OPAQUE,
                "redirect_uris": [NATIVE_REDIRECT],
                "access_token_format": "opaque",
                "access_token_lifetime": 300,
            },
        ],
        "rate_limits": {"enabled": False},
        # Devices poll every second (not 5): tests wait less.
        "device_authorization": {"interval": 1},
        "log_level": "warning",
    }
    config.update(overrides)
    return config


@dataclass
class ServerProcess:
    data_dir: Path
    port: int
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    native_client_id = NATIVE

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "authgear.yaml").write_text(yaml.safe_dump(self.config))

    def start(
        self,
        env: dict[str, str] | None = None,
        *,
        wrapper: tuple[str, ...] = (),
        args: tuple[str, ...] = (),
    ) -> None:
        """``wrapper``: a command to run the server under (``prlimit --nofile=256``);
        ``args``: more `authgear serve` arguments."""
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*wrapper, AUTHGEAR, "serve", "--data-dir", str(self.data_dir), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self._log = log
        # Generous: on a loaded machine (several test workers) the first start runs every
        # migration; a server that fails exits, and that is reported at once below.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            try:
                r = httpx2.get(self.url + "/.well-known/openid-configuration", timeout=1)
                if r.status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log()}")

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

    @property
    def database_url(self) -> str:
        return str(self.config.get("database_url") or f"sqlite:///{self.data_dir / 'authgear.db'}")

    @property
    def backend(self) -> str:
        return "postgresql" if self.database_url.startswith("postgresql") else "sqlite"

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run SQL (with ? placeholders) against the server's own database."""
        if self.backend == "sqlite":
            import sqlite3

            with sqlite3.connect(self.data_dir / "authgear.db") as db:
                return [tuple(r) for r in db.execute(sql, params).fetchall()]
        import asyncio

        import asyncpg

        parts = sql.split("?")
        numbered = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], start=1))

        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.database_url)
            try:
                return [tuple(r) for r in await conn.fetch(numbered, *params)]
            finally:
                await conn.close()

        return asyncio.run(run())

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def create_user(self, email: str, password: str, *extra: str) -> str:
        """``authgear users create EMAIL --password-stdin [extra]``: the command's own parser,
        settings, stores and operation (checks, audit entry), run in this test process. A
        subprocess per user would start an interpreter and import the server (about 2 s of
        CPU) for each of the suite's many users; the command itself runs as a subprocess in
        the CLI tests. A refusal raises the operation's error (InvalidInput, EmailTaken)."""
        # A thread of its own: the command runs its own event loop, and callers may be
        # inside one (async tests).
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(_create_user, self.data_dir, email, password, extra).result()


def _create_user(data_dir: Path, email: str, password: str, extra: tuple[str, ...]) -> str:
    from authgear.cli import build_parser
    from authgear.cli._common import Stores, load, with_stores

    argv = ["users", "create", email, "--password-stdin", "--data-dir", str(data_dir), *extra]
    args = build_parser().parse_args(argv)
    settings, _ = load(args)

    async def create(s: Stores) -> str:
        user = await s.ops.create_user(
            s.actor,
            int(time.time()),
            email=args.email,
            password=None if getattr(args, "no_password", False) else password,
            email_verified=args.verified,
            roles=args.role or (),
        )
        return user.id

    return with_stores(settings, create)


def new_email() -> str:
    return f"user-{secrets.token_hex(6)}@example.com"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Browser:
    """A cookie-keeping HTTP client that walks the login pages like a person without JS."""

    base: str
    http: httpx2.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx2.Client(base_url=self.base, follow_redirects=False, timeout=10)

    def close(self) -> None:
        self.http.close()

    def authorize(self, **params: str) -> httpx2.Response:
        return self.http.get("/oauth2/authorize", params=params)

    def submit(self, page_url: str, email: str, password: str) -> httpx2.Response:
        page = self.http.get(page_url)
        assert page.status_code == 200, page.text
        m = CSRF_RE.search(page.text)
        assert m, "no csrf token on the page"
        return self.http.post(
            page_url, data={"csrf_token": m.group(1), "email": email, "password": password}
        )


@dataclass
class Flow:
    client_id: str
    redirect_uri: str
    verifier: str
    state: str
    nonce: str

    @classmethod
    def new(
        cls, client_id: str = NATIVE, redirect_uri: str = "http://127.0.0.1:5555/callback"
    ) -> Flow:
        verifier, _ = pkce_pair()
        return cls(
            client_id, redirect_uri, verifier, secrets.token_urlsafe(8), secrets.token_urlsafe(8)
        )

    def params(
        self,
        scope: str = "openid offline_access https://authgear.com/scopes/full-access",
        **extra: str,
    ) -> dict[str, str]:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": scope,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **extra,
        }


def callback_params(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code == 303, (response.status_code, response.text[:500])
    location = response.headers["location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def login(
    server: ServerProcess,
    email: str,
    password: str,
    *,
    flow: Flow | None = None,
    signup: bool = False,
    browser: Browser | None = None,
    **extra: str,
) -> tuple[dict[str, str], Flow, Browser]:
    """authorize → login/signup form → callback params (code, state, iss)."""
    flow = flow or Flow.new()
    browser = browser or Browser(server.url)
    params = flow.params(**extra)
    if signup:
        params["x_page"] = "signup"
    r = browser.authorize(**params)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    if location.startswith("/"):
        r = browser.submit(location, email, password)
    return callback_params(r), flow, browser


def exchange(server: ServerProcess, code: str, flow: Flow, **extra: str) -> httpx2.Response:
    return httpx2.post(
        server.url + "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "client_id": flow.client_id,
            "code": code,
            "redirect_uri": flow.redirect_uri,
            "code_verifier": flow.verifier,
            **extra,
        },
    )


def refresh(server: ServerProcess, refresh_token: str, client_id: str = NATIVE) -> httpx2.Response:
    return httpx2.post(
        server.url + "/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": refresh_token,
        },
    )


def tokens_for(
    server: ServerProcess, client_id: str = NATIVE, **extra: str
) -> tuple[dict[str, Any], str]:
    """A new user, logged in through the forms, with exchanged tokens."""
    email = new_email()
    cb, flow, browser = login(
        server, email, "correct horse battery", flow=Flow.new(client_id), signup=True, **extra
    )
    browser.close()
    r = exchange(server, cb["code"], flow)
    assert r.status_code == 200, r.text
    return r.json(), email
