"""Migration 0007 on a database with data (SQLite and PostgreSQL): existing users get no
authenticators (and keep their rows), sign-in flows stored before stay readable, and the
downgrade goes back cleanly."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command

from authgear.server.signin.flow import LoginFlow
from authgear.server.storage.migrate import alembic_config

LEGACY_FLOW = json.dumps(
    {
        "client_id": "c",
        "redirect_uri": "http://127.0.0.1/cb",
        "response_type": "code",
        "response_mode": "query",
        "scopes": ["openid"],
        "state": "s",
        "nonce": None,
        "code_challenge": None,
        "prompt": [],
        "max_age": None,
        "login_hint": None,
        "ui_locales": None,
        "page": "login",
    }
)
USER = (
    "INSERT INTO users (id, email, email_key, password_hash, email_verified, roles, "
    "standard_attributes, custom_attributes, disabled, created_at, updated_at) "
    "VALUES ('u1', 'a@example.com', 'a@example.com', 'h', false, '[]', '{}', '{}', false, 1, 1)"
)
TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table'",
    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    url: str = request.getfixturevalue("postgres").create_database(f"mig_{secrets.token_hex(5)}")
    return url


def sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) on the database, outside the server's code."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return [tuple(r) for r in db.execute(statement, params).fetchall()]
    parts = statement.split("?")
    numbered = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], start=1))

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(numbered, *params)]
        finally:
            await conn.close()

    return asyncio.run(run())


def tables(url: str) -> set[str]:
    return {r[0] for r in sql(url, TABLES[0] if url.startswith("sqlite") else TABLES[1])}


def test_0007_upgrades_a_database_with_users_and_flows_and_downgrades(database_url: str) -> None:
    url = database_url
    cfg = alembic_config(url)
    command.upgrade(cfg, "0005")
    sql(url, USER)
    value = "?" if url.startswith("sqlite") else "CAST(? AS JSON)"
    insert = "INSERT INTO auth_flows (id, data, created_at, expires_at) VALUES ('f1', {}, 1, ?)"
    sql(url, insert.format(value), LEGACY_FLOW, 99999999999)
    command.upgrade(cfg, "head")
    assert sql(url, "SELECT authenticator_count FROM users") == [(0,)]
    [(stored, rev)] = sql(url, "SELECT CAST(data AS TEXT), rev FROM auth_flows")
    flow = LoginFlow.from_json("f1", rev, json.loads(stored))
    assert rev == 0 and flow.authorization is not None and flow.authorization.state == "s"
    assert {"authenticators", "mfa_device_tokens"} <= tables(url)
    command.downgrade(cfg, "0005")
    assert not {"authenticators", "mfa_device_tokens"} & tables(url)
    assert sql(url, "SELECT email FROM users") == [("a@example.com",)]
    command.upgrade(cfg, "head")
    assert sql(url, "SELECT authenticator_count FROM users") == [(0,)]
