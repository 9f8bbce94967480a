"""``authgear admin ...``: users, their sessions and admin API keys, from a shell.

Works on the database directly (the server need not run; when it runs, changes take effect on
its next request). Every change goes through the same operations as the admin API and the
portal, and is recorded in the audit log as done by the CLI.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from authgear.cli import accounts, authenticators
from authgear.cli._common import (
    CLIError,
    Stores,
    add_server_options,
    clean,
    load,
    ops_error,
    print_json,
    read_password,
    table,
    when,
    with_stores,
)

Handler = Callable[[argparse.Namespace, Stores], Awaitable[int]]


def _now() -> int:
    return int(time.time())


# -- users ------------------------------------------------------------------------------------


async def users_list(args: argparse.Namespace, s: Stores) -> int:
    from authgear.server.admin.present import user_json

    users, _ = await s.admin.list_users(query=args.search, limit=args.limit)
    if args.json:
        print_json([user_json(u) for u in users])
        return 0
    rows = [
        [
            u.id,
            u.email,
            "disabled" if u.disabled else "active",
            ",".join(u.roles) or "-",
            when(u.last_login_at),
        ]
        for u in users
    ]
    table(rows, ["ID", "EMAIL", "STATUS", "ROLES", "LAST SIGN-IN (UTC)"])
    return 0


async def create_user(args: argparse.Namespace, s: Stores) -> int:
    """``authgear admin users create`` and ``authgear users create``: one operation, with its
    checks (email, password, roles) and its audit entry."""
    from authgear.server.admin.ops import InvalidInput
    from authgear.server.storage import EmailTaken

    password = None if getattr(args, "no_password", False) else read_password(args)
    try:
        user = await s.ops.create_user(
            s.actor,
            _now(),
            email=args.email,
            password=password,
            email_verified=args.verified,
            roles=args.role or (),
        )
    except (InvalidInput, EmailTaken) as e:
        raise ops_error(e) from None
    print(user.id)
    return 0


async def users_disable(args: argparse.Namespace, s: Stores) -> int:
    user = await s.user(args.user)
    await s.ops.set_disabled(s.actor, _now(), user.id, True)
    print(f"disabled {clean(user.email)} ({user.id})")
    return 0


async def users_enable(args: argparse.Namespace, s: Stores) -> int:
    user = await s.user(args.user)
    await s.ops.set_disabled(s.actor, _now(), user.id, False)
    print(f"enabled {clean(user.email)} ({user.id})")
    return 0


async def users_delete(args: argparse.Namespace, s: Stores) -> int:
    user = await s.user(args.user)
    if not args.yes:
        raise CLIError(f"this deletes {clean(user.email)} and all their sessions; pass --yes")
    await s.ops.delete_user(s.actor, _now(), user.id)
    print(f"deleted {clean(user.email)} ({user.id})")
    return 0


async def users_set_roles(args: argparse.Namespace, s: Stores) -> int:
    from authgear.server.admin.ops import InvalidInput

    user = await s.user(args.user)
    try:
        await s.ops.set_roles(s.actor, _now(), user.id, args.roles)
    except InvalidInput as e:
        raise ops_error(e) from None
    print(f"roles of {clean(user.email)}: {','.join(args.roles) or '-'}")
    return 0


# -- sessions ---------------------------------------------------------------------------------


async def sessions_list(args: argparse.Namespace, s: Stores) -> int:
    from authgear.server.admin.present import session_json, session_title

    user = await s.user(args.user)
    sessions = await s.admin.list_sessions(user.id, _now())
    if args.json:
        print_json([session_json(x, s.settings.config) for x in sessions])
        return 0
    rows = [
        [
            x.id,
            x.kind,
            x.client_id or "-",
            session_title(x),
            when(x.last_access_at),
            x.last_access_ip or "-",
        ]
        for x in sessions
    ]
    table(rows, ["ID", "KIND", "CLIENT", "DEVICE", "LAST ACCESS (UTC)", "IP"])
    return 0


async def sessions_revoke(args: argparse.Namespace, s: Stores) -> int:
    revoked = await s.ops.revoke_session(s.actor, _now(), args.id)
    if revoked is None:
        raise CLIError(f"no such session: {clean(args.id)}")
    print(f"revoked {revoked.kind} {revoked.id}")
    return 0


async def sessions_revoke_all(args: argparse.Namespace, s: Stores) -> int:
    user = await s.user(args.user)
    count = await s.ops.revoke_all(s.actor, _now(), user.id)
    print(f"revoked {count} session{'s' if count != 1 else ''} of {clean(user.email)}")
    return 0


# -- admin API keys ---------------------------------------------------------------------------


async def keys_create(args: argparse.Namespace, s: Stores) -> int:
    key, secret = await s.ops.create_key(s.actor, _now(), args.name)
    print(
        f"created admin API key {key.id} ({clean(key.name)}); it is shown once, store it now:",
        file=sys.stderr,
    )
    print(secret)
    return 0


async def keys_list(args: argparse.Namespace, s: Stores) -> int:
    keys = await s.admin.list_keys()
    rows = [
        [
            k.id,
            k.name,
            when(k.created_at),
            when(k.last_used_at),
            f"revoked {when(k.revoked_at)}" if k.revoked_at else "active",
        ]
        for k in keys
    ]
    table(rows, ["ID", "NAME", "CREATED (UTC)", "LAST USED (UTC)", "STATUS"])
    return 0


async def keys_revoke(args: argparse.Namespace, s: Stores) -> int:
    key = await s.ops.revoke_key(s.actor, _now(), args.id)
    if key is None:
        raise CLIError(f"no such admin API key: {clean(args.id)}")
    print(f"revoked admin API key {key.id} ({clean(key.name)})")
    return 0


# -- the parser -------------------------------------------------------------------------------


def command(handler: Handler, *, writes: bool = True) -> Callable[[argparse.Namespace], int]:
    """A handler as an argparse ``func``: settings loaded, stores opened and closed. A
    read-only command (``writes=False``) never migrates the database."""

    def run(args: argparse.Namespace) -> int:
        settings, _ = load(args)
        return with_stores(settings, lambda s: handler(args, s), writes=writes)

    return run


def _add(
    sub: Any, name: str, help: str, fn: Handler, *, writes: bool = True
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    add_server_options(p)
    p.set_defaults(func=command(fn, writes=writes))
    return p


def add_user_create_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("email", help="the new user's email address (their login)")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (else: asked twice)",
    )
    p.add_argument("--verified", action="store_true", help="mark the email as verified")
    p.add_argument(
        "--role", action="append", metavar="ROLE", help="give a role (repeatable), e.g. admin"
    )


def register(subparsers: Any) -> None:
    """Add ``authgear admin ...`` to the top-level parser's subcommands."""
    text = "manage users, sessions and admin API keys (in the database, audited)"
    admin = subparsers.add_parser("admin", help=text, description=text)
    groups = admin.add_subparsers(dest="admin_command", metavar="GROUP")

    _register_users(groups)
    _register_sessions(groups)
    _register_keys(groups)


def _register_users(groups: Any) -> None:
    text = "list, create, disable, enable, delete users; set their roles"
    users = groups.add_parser("users", help=text, description=text)
    us = users.add_subparsers(dest="admin_users_command", metavar="ACTION")
    p = _add(us, "list", "list users (newest first)", users_list, writes=False)
    p.add_argument("--search", metavar="TEXT", help="part of an email, or a user id")
    p.add_argument("--limit", type=int, default=100, help="at most this many users (100)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = _add(us, "create", "create a user", create_user)
    add_user_create_options(p)
    p.add_argument(
        "--no-password",
        action="store_true",
        help="an account without a password (cannot sign in until one is set)",
    )
    for name, fn, desc in (
        ("disable", users_disable, "disable a user: refused everywhere at once"),
        ("enable", users_enable, "enable a disabled user"),
        ("delete", users_delete, "delete a user with all their sessions"),
    ):
        p = _add(us, name, desc, fn)
        p.add_argument("user", help="user id or email")
        if name == "delete":
            p.add_argument("--yes", action="store_true", help="confirm the deletion")
    p = _add(us, "set-roles", "replace a user's roles", users_set_roles)
    p.add_argument("user", help="user id or email")
    p.add_argument("roles", nargs="*", metavar="ROLE", help="the roles (none: remove all)")
    accounts.register_user_actions(us, _add)
    authenticators.register(lambda n, h, fn, w: _add(us, n, h, fn, writes=w))
    authenticators.register_identities(lambda n, h, fn, w: _add(us, n, h, fn, writes=w))


def _register_sessions(groups: Any) -> None:
    text = "list and revoke a user's sessions"
    sessions = groups.add_parser("sessions", help=text, description=text)
    ss = sessions.add_subparsers(dest="admin_sessions_command", metavar="ACTION")
    p = _add(ss, "list", "a user's browser and app sessions", sessions_list, writes=False)
    p.add_argument("user", help="user id or email")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = _add(ss, "revoke", "revoke one session (its app's next refresh fails)", sessions_revoke)
    p.add_argument("id", help="session id (from `sessions list`)")
    p = _add(ss, "revoke-all", "revoke all sessions of a user", sessions_revoke_all)
    p.add_argument("user", help="user id or email")


def _register_keys(groups: Any) -> None:
    text = "admin API keys (for /_api/admin)"
    keys = groups.add_parser("keys", help=text, description=text)
    ks = keys.add_subparsers(dest="admin_keys_command", metavar="ACTION")
    p = _add(ks, "create", "create a key (printed once, on standard output)", keys_create)
    p.add_argument("--name", default="admin", help="what the key is for (default: admin)")
    _add(ks, "list", "list keys (never their secrets)", keys_list, writes=False)
    p = _add(ks, "revoke", "revoke a key", keys_revoke)
    p.add_argument("id", help="key id (from `keys list`)")
