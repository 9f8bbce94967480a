"""Fixtures of the upstream identity provider tests: our server (SQLite and PostgreSQL) whose
``identity_providers`` are clients of a real oidc-provider (tests/client/oidc_provider/
upstream_idp.mjs) and of a GitHub-like stub, and helpers that walk a sign-in through both."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx2
import pytest

from agtest.server import Flow, ServerProcess, callback_params, free_port, server_config
from agtest.services import Postgres
from agtest.upstream import (
    GithubStub,
    UpstreamIdp,
    click_provider,
    start_upstream_idp,
    upstream_login,
)

# Upstream clients (aliases) in the server's config; see upstream_idp.mjs for each.
HOSTILE = ["wrong-iss", "wrong-aud", "bad-sig", "expired", "no-nonce", "bad-nonce"]
PLAIN = ["good", "other", "post-auth", "userinfo", "unknown-kid"]


@dataclass
class SsoServer:
    server: ServerProcess
    idp: UpstreamIdp
    github: GithubStub

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, follow_redirects=False, timeout=30)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.server.query(sql, *params)

    def identities(self, provider: str, subject: str) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT user_id, email, email_verified FROM identities "
            "WHERE provider = ? AND subject = ?",
            provider,
            subject,
        )

    def users_with_email(self, email: str) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT id, password_hash IS NULL, email_verified FROM users WHERE email_key = ?",
            email.lower(),
        )


def sso_config(port: int, idp: UpstreamIdp, github: GithubStub) -> dict[str, Any]:
    providers = [idp.provider(name) for name in PLAIN + HOSTILE]
    providers.append(idp.provider("linking", account_linking="login_and_link"))
    providers.append(idp.provider("unverified", account_linking="login_and_link"))
    providers.append(github.provider("github", account_linking="login_and_link"))
    return server_config(port, identity_providers=providers)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sso(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SsoServer]:
    port = free_port()
    idp = start_upstream_idp(f"http://127.0.0.1:{port}")
    github = GithubStub()
    config = sso_config(port, idp, github)
    if request.param == "postgresql":
        pg: Postgres = request.getfixturevalue("postgres")
        config["database_url"] = pg.create_database(f"ag_{secrets.token_hex(6)}")
    server = ServerProcess(tmp_path_factory.mktemp("sso") / "data", port, config)
    server.start()
    try:
        yield SsoServer(server, idp, github)
    finally:
        server.stop()
        idp.stop()
        github.close()


def new_login() -> str:
    """An upstream account name (its email is <name>@example.test)."""
    return f"u{secrets.token_hex(5)}"


def start_authorize(c: httpx2.Client, flow: Flow | None = None) -> tuple[str, Flow]:
    """An app's authorization request: our login page's URL (absolute) and the app's flow."""
    flow = flow or Flow.new()
    r = c.get("/oauth2/authorize", params=flow.params())
    assert r.status_code == 303, r.text[:500]
    return urljoin(str(r.url), r.headers["location"]), flow


def sso_to_callback(c: httpx2.Client, page_url: str, alias: str, login: str) -> str:
    """Press "Continue with <alias>" on our page and sign in at the provider: the callback URL
    the provider sends the browser to (not fetched)."""
    return upstream_login(c, click_provider(c, page_url, alias), login)


def sign_in_app(
    sso: SsoServer, alias: str, login: str
) -> tuple[httpx2.Client, dict[str, str], Flow]:
    """An app's whole sign-in with a provider: the client, the app's callback params (code)."""
    c = sso.client()
    page, flow = start_authorize(c)
    answer = c.get(sso_to_callback(c, page, alias, login))
    return c, callback_params(answer), flow


def follow(c: httpx2.Client, r: httpx2.Response, limit: int = 5) -> httpx2.Response:
    """Follow our own redirects (relative ones) to the page they end on."""
    for _ in range(limit):
        if not r.is_redirect:
            return r
        target = urljoin(str(r.url), r.headers["location"])
        if not target.startswith(str(c.base_url).rstrip("/")):
            return r
        r = c.get(target)
    return r
