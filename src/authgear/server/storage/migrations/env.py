"""Alembic environment: runs the packaged migrations on the configured database."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from authgear.server.storage.db import open_database
from authgear.server.storage.schema import metadata

config = context.config


# Several processes may start at once against one PostgreSQL: one migrates, the others wait.
MIGRATION_LOCK = 7_305_401


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    db = open_database(config.get_main_option("sqlalchemy.url") or "")
    try:
        await db.run_sync(_run)
    finally:
        await db.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `authgear db upgrade`")
asyncio.run(_main())
