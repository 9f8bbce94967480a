"""Migration 0009 (device codes, counters) on a database with users (SQLite and PostgreSQL):
up, down and up again, the users kept."""

from __future__ import annotations

from alembic import command
from test_migration_0007 import USER, database_url, sql, tables  # noqa: F401 - the fixture

from authgear.server.storage.migrate import alembic_config

DEVICE_CODE = (
    "INSERT INTO device_codes (id, device_code_hash, user_code_hash, client_id, scopes, "
    "created_at, expires_at, poll_interval, last_poll_too_fast, status, failures_base, amr, "
    "user_id) VALUES ('d1', 'h1', 'u1', 'c', {json}, 1, 2, 5, false, 'approved', 0, {json}, 'u1')"
)


def test_0009_adds_device_codes_and_counters_and_downgrades(database_url: str) -> None:  # noqa: F811
    url = database_url
    cfg = alembic_config(url)
    command.upgrade(cfg, "0008")
    sql(url, USER)
    assert not {"device_codes", "counters"} & tables(url)
    command.upgrade(cfg, "0009")
    assert {"device_codes", "counters"} <= tables(url)
    json_value = "'[]'" if url.startswith("sqlite") else "CAST('[]' AS JSON)"
    sql(url, DEVICE_CODE.format(json=json_value))
    sql(url, "INSERT INTO counters (name, value) VALUES ('n', 3)")
    assert sql(url, "SELECT status, user_id FROM device_codes") == [("approved", "u1")]
    command.downgrade(cfg, "0008")
    assert not {"device_codes", "counters"} & tables(url)
    assert sql(url, "SELECT email FROM users") == [("a@example.com",)]
    command.upgrade(cfg, "head")
    assert sql(url, "SELECT COUNT(*) FROM device_codes") == [(0,)]
