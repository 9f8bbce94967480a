"""``authgear admin users send-reset | mark-verified | set-password``: account recovery from a
shell, recorded in the audit log as done by the CLI (like the rest of ``authgear admin``).

The CLI is its own process: a reset mail is sent from here (SMTP, or the data folder's outbox),
waiting for it (with the configured retries) before the command returns.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

# How long the command waits for its mail to go out (retries included).
MAIL_GRACE = 120.0


def _accounts(ctx: Any) -> Any:
    from authgear.server.accounts import AccountService
    from authgear.server.admin.ops import AdminOps
    from authgear.server.mail import MailService
    from authgear.server.ratelimit import MemoryRateLimiter

    if getattr(ctx, "accounts", None) is None:
        ctx.accounts = AccountService(
            config=ctx.settings.config,
            repo=ctx.repo,
            db=ctx.repo.engine,
            limiter=MemoryRateLimiter(False),
            mail=MailService(ctx.settings),
        )
        ctx.ops = AdminOps(ctx.repo, ctx.store, ctx.accounts)
    return ctx.accounts


async def _send_mail(ctx: Any) -> None:
    from authgear.cli import CLIError

    mail = _accounts(ctx).mail
    await mail.aclose(MAIL_GRACE)
    if mail.queue.failed:
        raise CLIError("the mail could not be sent (see the log line above)")


async def send_reset(args: argparse.Namespace, ctx: Any) -> int:
    from authgear.cli import CLIError
    from authgear.server.admin.ops import InvalidInput
    from authgear.server.mail.transport import OutboxMailer

    user = await ctx.user(args.user)
    _accounts(ctx)
    try:
        await ctx.ops.send_reset(ctx.actor, _now(), user.id)
    except InvalidInput as e:
        raise CLIError(str(e)) from None
    await _send_mail(ctx)
    where = " (in the outbox: `authgear outbox show latest`)"
    if not isinstance(ctx.accounts.mail.mailer, OutboxMailer):
        where = ""
    print(f"sent a password reset to {_clean(user.email)}{where}")
    return 0


async def mark_verified(args: argparse.Namespace, ctx: Any) -> int:
    user = await ctx.user(args.user)
    _accounts(ctx)
    await ctx.ops.mark_verified(ctx.actor, _now(), user.id, not args.unverified)
    state = "not verified" if args.unverified else "verified"
    print(f"email of {_clean(user.email)} marked {state}")
    return 0


async def set_password(args: argparse.Namespace, ctx: Any) -> int:
    from authgear.cli import CLIError, _read_password
    from authgear.server.admin.ops import InvalidInput

    user = await ctx.user(args.user)
    password = _read_password(args)
    _accounts(ctx)
    try:
        result = await ctx.ops.set_password(
            ctx.actor, _now(), user.id, password, end_sessions=not args.keep_sessions
        )
    except InvalidInput as e:
        raise CLIError(str(e)) from None
    await _send_mail(ctx)
    ended = result.ended_sessions
    print(f"password of {_clean(user.email)} set; {ended} session{'s' if ended != 1 else ''} ended")
    return 0


def _now() -> int:
    import time

    return int(time.time())


def _clean(value: str) -> str:
    from authgear.server.admin_cli import _clean as clean

    return clean(value)


Add = Callable[..., argparse.ArgumentParser]


def register_user_actions(users_sub: Any, common: Any, add: Add) -> None:
    """Add the recovery actions to ``authgear admin users``; ``add`` is admin_cli's _add."""
    p = add(users_sub, common, "send-reset", "email a password reset code and link", send_reset)
    p.add_argument("user", help="user id or email")
    p = add(users_sub, common, "mark-verified", "mark the email address verified", mark_verified)
    p.add_argument("user", help="user id or email")
    p.add_argument("--unverified", action="store_true", help="mark it not verified instead")
    p = add(users_sub, common, "set-password", "set a password (under the policy)", set_password)
    p.add_argument("user", help="user id or email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--keep-sessions", action="store_true", help="do not end the user's sessions")
