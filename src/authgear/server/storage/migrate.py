"""Run the Alembic migrations shipped inside the package."""

from __future__ import annotations

import logging
import os
from pathlib import Path

# Alembic logs each plugin it registers, at import: keep our start-up output to what matters.
logging.getLogger("alembic").setLevel(logging.WARNING)

import asyncio  # noqa: E402

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy.engine import Connection, make_url  # noqa: E402

from authgear.server.storage.db import open_database  # noqa: E402

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str) -> None:
    """Bring the database to the newest schema. Blocking: call it off the event loop."""
    _create_private_sqlite_file(database_url)
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str:
    """The schema revision this version of the code needs."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def known_revisions() -> list[str]:
    """Every revision this code knows, oldest first."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def current_revision(database_url: str) -> str | None:
    """The database's schema revision; None for an empty database. Reads only. Blocking."""
    found: list[str | None] = []

    def read(conn: Connection) -> None:
        found.append(MigrationContext.configure(conn).get_current_revision())

    async def main() -> None:
        db = open_database(database_url, pool_size=1, max_overflow=0)
        try:
            await db.run_sync(read)
        finally:
            await db.dispose()

    asyncio.run(main())
    return found[0]


def sqlite_file_missing(database_url: str) -> bool:
    """A SQLite URL whose file does not exist yet (reading it would create it)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return False
    return not Path(url.database).exists()


def _create_private_sqlite_file(database_url: str) -> None:
    """The database holds signing keys: create the SQLite file readable by its owner only."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    path = Path(url.database)
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
