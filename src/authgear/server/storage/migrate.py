"""Run the Alembic migrations shipped inside the package."""

from __future__ import annotations

import logging
import os
from pathlib import Path

# Alembic logs each plugin it registers, at import: keep our start-up output to what matters.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

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


def _create_private_sqlite_file(database_url: str) -> None:
    """The database holds signing keys: create the SQLite file readable by its owner only."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    path = Path(url.database)
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
