"""``authgear admin ...``: users, their sessions and admin API keys, from a shell.

Works on the database directly (the server need not run; when it runs, changes take effect on
its next request). Every change is recorded in the audit log as done by the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from authgear.server import admin_cli_authenticators

if TYPE_CHECKING:
    from authgear.server.storage.admin import Actor

Handler = Callable[[argparse.Namespace, Any], Awaitable[int]]


def _cli_error(message: str) -> Exception:
    from authgear.cli import CLIError

    return CLIError(message)


def cli_actor() -> Actor:
    """The audit log's actor for a command run from this shell: the OS user and the host."""
    from authgear.server.storage.admin import Actor

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor("cli", who, f"{who}@{socket.gethostname()}")


class _Ctx:
    """The repositories and the actor of one command."""

    def __init__(self, settings: Any) -> None:
        from authgear.server.admin.ops import AdminOps
        from authgear.server.storage.admin import AdminRepository
        from authgear.server.storage.sql import SQLRepository

        self.settings = settings
        self.repo = SQLRepository.open(settings.database_url)
        self.store = AdminRepository(self.repo.engine)
        self.ops = AdminOps(self.repo, self.store)
        self.actor = cli_actor()

    async def user(self, ref: str) -> Any:
        """A user by id or email; a one-line error when there is none."""
        user = await self.store.get_user(ref) if "@" not in ref else None
        if user is None:
            user = await self.repo.get_user_by_email(ref)
        if user is None:
            raise _cli_error(f"no such user: {ref}")
        return user


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from authgear.cli import _load
        from authgear.server.storage import migrate

        settings, _ = _load(args)
        migrate.upgrade(settings.database_url)

        async def main() -> int:
            ctx = _Ctx(settings)
            try:
                return await handler(args, ctx)
            finally:
                await ctx.repo.close()

        return asyncio.run(main())

    return run


def _now() -> int:
    return int(time.time())


def _when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _clean(value: str) -> str:
    """Text from users (emails, user agents, device names) fit for a terminal: control
    characters (an escape sequence could rewrite or hide what the admin sees) are shown
    escaped, e.g. ``\\x1b``."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def _table(rows: list[list[str]], header: list[str]) -> None:
    rows = [[_clean(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    print()


# -- users ------------------------------------------------------------------------------------


async def users_list(args: argparse.Namespace, ctx: _Ctx) -> int:
    from authgear.server.admin.present import user_json

    users, _ = await ctx.store.list_users(query=args.search, limit=args.limit)
    if args.json:
        _json([user_json(u) for u in users])
        return 0
    rows = [
        [
            u.id,
            u.email,
            "disabled" if u.disabled else "active",
            ",".join(u.roles) or "-",
            _when(u.last_login_at),
        ]
        for u in users
    ]
    _table(rows, ["ID", "EMAIL", "STATUS", "ROLES", "LAST SIGN-IN (UTC)"])
    return 0


async def users_create(args: argparse.Namespace, ctx: _Ctx) -> int:
    from authgear.cli import _read_password
    from authgear.server.admin.ops import InvalidInput
    from authgear.server.storage.sql import EmailTaken

    password = None if args.no_password else _read_password(args)
    try:
        user = await ctx.ops.create_user(
            ctx.actor,
            _now(),
            email=args.email,
            password=password,
            email_verified=args.verified,
            roles=args.role or (),
        )
    except InvalidInput as e:
        raise _cli_error(str(e)) from None
    except EmailTaken:
        raise _cli_error(f"a user with email {args.email} already exists") from None
    print(user.id)
    return 0


async def users_disable(args: argparse.Namespace, ctx: _Ctx) -> int:
    user = await ctx.user(args.user)
    await ctx.ops.set_disabled(ctx.actor, _now(), user.id, True)
    print(f"disabled {_clean(user.email)} ({user.id})")
    return 0


async def users_enable(args: argparse.Namespace, ctx: _Ctx) -> int:
    user = await ctx.user(args.user)
    await ctx.ops.set_disabled(ctx.actor, _now(), user.id, False)
    print(f"enabled {_clean(user.email)} ({user.id})")
    return 0


async def users_delete(args: argparse.Namespace, ctx: _Ctx) -> int:
    user = await ctx.user(args.user)
    if not args.yes:
        raise _cli_error(f"this deletes {_clean(user.email)} and all their sessions; pass --yes")
    await ctx.ops.delete_user(ctx.actor, _now(), user.id)
    print(f"deleted {_clean(user.email)} ({user.id})")
    return 0


async def users_set_roles(args: argparse.Namespace, ctx: _Ctx) -> int:
    from authgear.server.admin.ops import InvalidInput

    user = await ctx.user(args.user)
    try:
        await ctx.ops.set_roles(ctx.actor, _now(), user.id, args.roles)
    except InvalidInput as e:
        raise _cli_error(str(e)) from None
    print(f"roles of {_clean(user.email)}: {','.join(args.roles) or '-'}")
    return 0


# -- sessions ---------------------------------------------------------------------------------


async def sessions_list(args: argparse.Namespace, ctx: _Ctx) -> int:
    from authgear.server.admin.present import session_json, session_title

    user = await ctx.user(args.user)
    sessions = await ctx.store.list_sessions(user.id, _now())
    if args.json:
        _json([session_json(s, ctx.settings.config) for s in sessions])
        return 0
    rows = [
        [
            s.id,
            s.kind,
            s.client_id or "-",
            session_title(s),
            _when(s.last_access_at),
            s.last_access_ip or "-",
        ]
        for s in sessions
    ]
    _table(rows, ["ID", "KIND", "CLIENT", "DEVICE", "LAST ACCESS (UTC)", "IP"])
    return 0


async def sessions_revoke(args: argparse.Namespace, ctx: _Ctx) -> int:
    revoked = await ctx.ops.revoke_session(ctx.actor, _now(), args.id)
    if revoked is None:
        raise _cli_error(f"no such session: {args.id}")
    print(f"revoked {revoked.kind} {revoked.id}")
    return 0


async def sessions_revoke_all(args: argparse.Namespace, ctx: _Ctx) -> int:
    user = await ctx.user(args.user)
    count = await ctx.ops.revoke_all(ctx.actor, _now(), user.id)
    print(f"revoked {count} session{'s' if count != 1 else ''} of {_clean(user.email)}")
    return 0


# -- admin API keys ---------------------------------------------------------------------------


async def keys_create(args: argparse.Namespace, ctx: _Ctx) -> int:
    key, secret = await ctx.ops.create_key(ctx.actor, _now(), args.name)
    print(
        f"created admin API key {key.id} ({key.name}); it is shown once, store it now:",
        file=sys.stderr,
    )
    print(secret)
    return 0


async def keys_list(args: argparse.Namespace, ctx: _Ctx) -> int:
    keys = await ctx.store.list_keys()
    rows = [
        [
            k.id,
            k.name,
            _when(k.created_at),
            _when(k.last_used_at),
            f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active",
        ]
        for k in keys
    ]
    _table(rows, ["ID", "NAME", "CREATED (UTC)", "LAST USED", "STATUS"])
    return 0


async def keys_revoke(args: argparse.Namespace, ctx: _Ctx) -> int:
    key = await ctx.ops.revoke_key(ctx.actor, _now(), args.id)
    if key is None:
        raise _cli_error(f"no such admin API key: {args.id}")
    print(f"revoked admin API key {key.id} ({key.name})")
    return 0


# -- the parser -------------------------------------------------------------------------------


def _add(
    sub: Any, common: Callable[[argparse.ArgumentParser], None], name: str, help: str, fn: Handler
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help)
    common(p)
    p.set_defaults(func=_run(fn), host=None, port=None, public_origin=None)
    return p


def register(subparsers: Any) -> None:
    """Add ``authgear admin ...`` to the top-level parser's subcommands."""
    from authgear.cli import _common

    admin = subparsers.add_parser("admin", help="manage users, sessions and admin API keys")
    groups = admin.add_subparsers(dest="admin_command", metavar="GROUP")

    users = groups.add_parser("users", help="list, create, disable, enable, delete users")
    us = users.add_subparsers(dest="admin_users_command", metavar="ACTION")
    p = _add(us, _common, "list", "list users (by email)", users_list)
    p.add_argument("--search", help="part of an email, or a user id")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _add(us, _common, "create", "create a user", users_create)
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--no-password", action="store_true", help="an account without a password")
    p.add_argument("--verified", action="store_true", help="mark the email as verified")
    p.add_argument("--role", action="append", help="give a role (repeatable)")
    for name, fn, text in (
        ("disable", users_disable, "disable a user: refused everywhere at once"),
        ("enable", users_enable, "enable a disabled user"),
        ("delete", users_delete, "delete a user with all their sessions"),
    ):
        p = _add(us, _common, name, text, fn)
        p.add_argument("user", help="user id or email")
        if name == "delete":
            p.add_argument("--yes", action="store_true", help="do not ask")
    p = _add(us, _common, "set-roles", "replace a user's roles", users_set_roles)
    p.add_argument("user", help="user id or email")
    p.add_argument("roles", nargs="*", help="the roles (none: remove all)")
    admin_cli_authenticators.register(lambda n, h, fn, _w: _add(us, _common, n, h, fn))

    sessions = groups.add_parser("sessions", help="list and revoke a user's sessions")
    ss = sessions.add_subparsers(dest="admin_sessions_command", metavar="ACTION")
    p = _add(ss, _common, "list", "a user's browser and app sessions", sessions_list)
    p.add_argument("user", help="user id or email")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _add(ss, _common, "revoke", "revoke one session", sessions_revoke)
    p.add_argument("id", help="session id (from `sessions list`)")
    p = _add(ss, _common, "revoke-all", "revoke all sessions of a user", sessions_revoke_all)
    p.add_argument("user", help="user id or email")

    keys = groups.add_parser("keys", help="admin API keys")
    ks = keys.add_subparsers(dest="admin_keys_command", metavar="ACTION")
    p = _add(ks, _common, "create", "create a key (printed once)", keys_create)
    p.add_argument("--name", default="admin", help="what the key is for")
    _add(ks, _common, "list", "list keys (never their secrets)", keys_list)
    p = _add(ks, _common, "revoke", "revoke a key", keys_revoke)
    p.add_argument("id", help="key id (from `keys list`)")
