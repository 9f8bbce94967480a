"""``authgear admin users send-reset | mark-verified | set-password``: account recovery from a
shell, through the same operations as the admin API and the portal, recorded in the audit log
as done by the CLI.

The CLI is its own process: a reset mail is sent from here (SMTP, or the data folder's outbox),
waiting for it (with the configured retries) before the command returns.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from authgear.cli._common import CLIError, Stores, clean, read_password

# How long the command waits for its mail to go out (retries included).
MAIL_GRACE = 120.0

Add = Callable[..., argparse.ArgumentParser]


def _now() -> int:
    return int(time.time())


async def _send_mail(s: Stores) -> None:
    mail = s.accounts.mail
    await mail.aclose(MAIL_GRACE)
    if mail.queue.failed:
        raise CLIError("the mail could not be sent (see the log line above)")


async def send_reset(args: argparse.Namespace, s: Stores) -> int:
    from authgear.server.admin.ops import InvalidInput
    from authgear.server.mail.transport import OutboxMailer

    user = await s.user(args.user)
    try:
        await s.ops.send_reset(s.actor, _now(), user.id)
    except InvalidInput as e:
        raise CLIError(clean(str(e))) from None
    await _send_mail(s)
    where = ""
    if isinstance(s.accounts.mail.mailer, OutboxMailer):
        where = " (in the outbox: `authgear outbox show latest`)"
    print(f"sent a password reset to {clean(user.email)}{where}")  # ok-secret: an address
    return 0


async def mark_verified(args: argparse.Namespace, s: Stores) -> int:
    user = await s.user(args.user)
    await s.ops.mark_verified(s.actor, _now(), user.id, not args.unverified)
    state = "not verified" if args.unverified else "verified"
    print(f"email of {clean(user.email)} marked {state}")
    return 0


async def set_password(args: argparse.Namespace, s: Stores) -> int:
    from authgear.server.admin.ops import InvalidInput

    user = await s.user(args.user)
    password = read_password(args)
    try:
        result = await s.ops.set_password(
            s.actor, _now(), user.id, password, end_sessions=not args.keep_sessions
        )
    except InvalidInput as e:
        raise CLIError(clean(str(e))) from None
    await _send_mail(s)
    ended = result.ended_sessions if result is not None else 0
    plural = "s" if ended != 1 else ""
    print(f"password of {clean(user.email)} set; {ended} session{plural} ended")  # ok-secret
    return 0


def register_user_actions(users_sub: Any, add: Add) -> None:
    """Add the recovery actions to ``authgear admin users``; ``add`` is cli.admin's _add."""
    p = add(users_sub, "send-reset", "email a password reset code and link", send_reset)
    p.add_argument("user", help="user id or email")
    p = add(users_sub, "mark-verified", "mark the email address verified", mark_verified)
    p.add_argument("user", help="user id or email")
    p.add_argument("--unverified", action="store_true", help="mark it not verified instead")
    p = add(users_sub, "set-password", "set a password (under the password policy)", set_password)
    p.add_argument("user", help="user id or email")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (else: asked twice)",
    )
    p.add_argument("--keep-sessions", action="store_true", help="do not end the user's sessions")
