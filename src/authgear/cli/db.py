"""``authgear db ...``: the database schema."""

from __future__ import annotations

import argparse
from typing import Any

from authgear.cli._common import add_server_options, load, migrate


def upgrade(args: argparse.Namespace) -> int:
    settings, _ = load(args)
    migrate(settings)
    print("database is up to date")
    return 0


def register(subparsers: Any) -> None:
    text = "database maintenance"
    db = subparsers.add_parser("db", help=text, description=text)
    sub = db.add_subparsers(dest="db_command", metavar="ACTION")
    text = "apply the database migrations this version needs"
    p = sub.add_parser("upgrade", help=text, description=text)
    add_server_options(p)
    p.set_defaults(func=upgrade)
