"""Alembic environment: runs the packaged migrations on the configured database."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from authgear.server.storage.db import open_database
from authgear.server.storage.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
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
