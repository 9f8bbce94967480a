"""``authgear users create``: the quick way to make the first account.

The same operation as ``authgear admin users create`` (email, password and role checks, an
audit entry naming the shell user), so neither path can make an administrator unrecorded.
"""

from __future__ import annotations

from typing import Any

from authgear.cli import admin
from authgear.cli._common import add_server_options


def register(subparsers: Any) -> None:
    text = "manage users (more under `authgear admin users`)"
    users = subparsers.add_parser("users", help=text, description=text)
    sub = users.add_subparsers(dest="users_command", metavar="ACTION")
    text = "create a user with a password (like `authgear admin users create`)"
    create = sub.add_parser("create", help=text, description=text)
    add_server_options(create)
    admin.add_user_create_options(create)
    create.set_defaults(func=admin.command(admin.create_user))
