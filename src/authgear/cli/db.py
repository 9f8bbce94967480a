"""``authgear db ...``: the database schema, as a step the operator controls."""

from __future__ import annotations

import argparse
from typing import Any

from authgear.cli._common import (
    CLIError,
    add_server_options,
    database_errors,
    load,
    migrate,
)


def upgrade(args: argparse.Namespace) -> int:
    settings, _ = load(args)
    migrate(settings)
    print(f"{settings.database_name}: up to date")
    return 0


def _revisions(args: argparse.Namespace) -> tuple[str, str | None, str, list[str]]:
    from authgear.server.storage import migrate as migrations

    settings, _ = load(args)
    url = settings.database_url
    if migrations.sqlite_file_missing(url):
        current = None
    else:
        with database_errors(url):
            current = migrations.current_revision(url)
    return settings.database_name, current, migrations.head_revision(), migrations.known_revisions()


def current(args: argparse.Namespace) -> int:
    name, revision, head, known = _revisions(args)
    if revision == head:
        state = "up to date"
    elif revision is not None and revision not in known:
        state = "newer than this version of authgear"
    else:
        state = "behind: run `authgear db upgrade`"
    print(f"{name}: schema {revision or 'none (empty database)'}, this version needs {head}")
    print(state)
    return 0


def check(args: argparse.Namespace) -> int:
    """Exit 0 when the schema is what this version needs, else 1 with one line: for a
    deployment step or a readiness gate before `serve --no-migrate`."""
    name, revision, head, known = _revisions(args)
    if revision == head:
        print(f"{name}: schema {head}, up to date")
        return 0
    if revision is not None and revision not in known:
        raise CLIError(f"{name}: schema {revision} is newer than this version knows ({head})")
    pending = known[known.index(revision) + 1 :] if revision in known else known
    raise CLIError(
        f"{name}: schema {revision or 'none'}, {len(pending)} migration"
        f"{'s' if len(pending) != 1 else ''} pending ({', '.join(pending)}): "
        "run `authgear db upgrade`"
    )


def register(subparsers: Any) -> None:
    text = "the database schema (migrations)"
    db = subparsers.add_parser("db", help=text, description=text)
    sub = db.add_subparsers(dest="db_command", metavar="ACTION")
    for name, func, text in (
        ("upgrade", upgrade, "apply the migrations this version needs"),
        ("current", current, "show the database's schema revision and the one needed (reads only)"),
        ("check", check, "exit 0 if the schema is up to date, else 1 (reads only)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        add_server_options(p)
        p.set_defaults(func=func)
