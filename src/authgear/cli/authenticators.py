"""``authgear admin users authenticators|reset-mfa|remove-passkey|identities|unlink-identity``:
a user's sign-in methods from a shell (never a secret: kinds, labels and times), resetting their
second factor, removing a passkey, their linked upstream accounts and unlinking one. Every
change is in the audit log as done by the CLI.

:func:`register` adds them to the ``admin users`` group (cli/admin.py) through its
``add(name, help, handler, writes)``; a handler gets the parsed arguments and the command's
:class:`~authgear.cli._common.Stores`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from authgear.cli._common import CLIError, Stores, clean, when

Handler = Callable[[argparse.Namespace, Stores], Awaitable[int]]
Add = Callable[[str, str, Handler, bool], argparse.ArgumentParser]


def _ops(stores: Stores) -> Any:
    from authgear.server.admin.authenticators import AuthenticatorOps

    return AuthenticatorOps(stores.admin, stores.repo.authenticators)


async def authenticators(args: argparse.Namespace, stores: Stores) -> int:
    user = await stores.user(args.user)
    found = await _ops(stores).describe(user.id, int(time.time()))
    if args.json:
        json.dump(found, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    codes = found["recovery_codes"]
    print(f"{clean(user.email)} ({user.id})")
    print(f"password: {'set' if found['password'] else 'none'}")  # ok-secret: set or none
    print(f"recovery codes: {codes['unused']} of {codes['total']} unused")
    print(f"trusted browsers: {found['trusted_devices']}")
    for a in found["authenticators"]:
        name = "authenticator app" if a["kind"] == "totp" else f"passkey {a['label'] or ''}"
        print(
            f"{a['kind']:8} {a['id']}  {clean(name.strip())}  added {when(a['created_at'])}"
            f"  last used {when(a['last_used_at'])}"
        )
    return 0


async def reset_mfa(args: argparse.Namespace, stores: Stores) -> int:
    user = await stores.user(args.user)
    if not args.yes:
        raise CLIError(
            f"this removes the second factor of {clean(user.email)} (authenticator apps, "
            "recovery codes, trusted browsers); pass --yes"
        )
    reset = await _ops(stores).reset_mfa(stores.actor, int(time.time()), user.id)
    print(
        f"reset the second factor of {clean(user.email)}: {reset.totp} authenticator app(s), "
        f"{reset.recovery_codes} recovery code(s), {reset.device_tokens} trusted browser(s)"
    )
    return 0


async def remove_passkey(args: argparse.Namespace, stores: Stores) -> int:
    user = await stores.user(args.user)
    removed = await _ops(stores).remove_passkey(stores.actor, int(time.time()), user.id, args.id)
    if removed is None:
        raise CLIError(f"{clean(user.email)} has no passkey {clean(args.id)}")
    print(f"removed passkey {removed.id} ({clean(removed.label or '')}) of {clean(user.email)}")
    return 0


def register(add: Add) -> None:
    p = add("authenticators", "a user's sign-in methods (never secrets)", authenticators, False)
    p.add_argument("user", help="user id or email")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add(
        "reset-mfa",
        "remove a user's second factor (authenticator apps, recovery codes, trusted browsers)",
        reset_mfa,
        True,
    )
    p.add_argument("user", help="user id or email")
    p.add_argument("--yes", action="store_true", help="confirm")
    p = add("remove-passkey", "remove one of a user's passkeys", remove_passkey, True)
    p.add_argument("user", help="user id or email")
    p.add_argument("id", help="passkey id (from `authenticators`)")


# -- linked upstream identities (issue 15) ------------------------------------------------------


def _identity_ops(stores: Stores) -> Any:
    from authgear.server.admin.identities import IdentityOps

    return IdentityOps(stores.admin, stores.repo.identities, stores.settings.config)


async def identities(args: argparse.Namespace, stores: Stores) -> int:
    user = await stores.user(args.user)
    found = await _identity_ops(stores).describe(user.id)
    if args.json:
        json.dump(found, sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    print(f"{clean(user.email)} ({user.id})")
    if not found["identities"]:
        print("no linked accounts")
    for i in found["identities"]:
        email = clean(i["email"] or "(no email)")
        print(
            f"{clean(i['provider']):12} {i['id']}  {email}  subject {clean(i['subject'])}"
            f"  linked {when(i['created_at'])}  last used {when(i['last_used_at'])}"
        )
    return 0


async def unlink_identity(args: argparse.Namespace, stores: Stores) -> int:
    from authgear.server.storage.identities import LastSignInMethod

    user = await stores.user(args.user)
    try:
        removed = await _identity_ops(stores).unlink(
            stores.actor, int(time.time()), user.id, args.id, force=args.force
        )
    except LastSignInMethod:
        raise CLIError(
            f"this is the last way {clean(user.email)} can sign in; set a password first, or "
            "pass --force"
        ) from None
    if removed is None:
        raise CLIError(f"{clean(user.email)} has no linked account {clean(args.id)}")
    print(f"unlinked {clean(removed.provider)} account {removed.id} of {clean(user.email)}")
    return 0


def register_identities(add: Add) -> None:
    p = add("identities", "a user's linked upstream accounts", identities, False)
    p.add_argument("user", help="user id or email")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("unlink-identity", "unlink one of a user's upstream accounts", unlink_identity, True)
    p.add_argument("user", help="user id or email")
    p.add_argument("id", help="identity id (from `identities`)")
    p.add_argument("--force", action="store_true", help="even the user's last way to sign in")
