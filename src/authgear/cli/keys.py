"""``authgear keys ...``: the token signing keys and their encryption at rest."""

from __future__ import annotations

import argparse
import time
from typing import Any

from authgear.cli._common import Stores, add_server_options, load, table, when, with_stores


def rotate(args: argparse.Namespace) -> int:
    from authgear.server import keys

    settings, _ = load(args)
    config = settings.config
    # Every process re-reads keys within key_refresh_interval: wait two before signing.
    delay = 2 * config.key_refresh_interval
    longest = max((c.access_token_lifetime for c in config.clients), default=1800)
    cipher = keys.KeyCipher.from_config(config)

    async def body(s: Stores) -> Any:
        return await keys.rotate(
            s.repo, publish_delay=delay, max_token_lifetime=longest, cipher=cipher
        )

    new = with_stores(settings, body)
    print(f"new signing key {new.kid}: published now, signs from {when(new.activate_at)} UTC")
    print("older keys stay in the JWKS until their tokens have expired, then retire")
    return 0


def list_keys(args: argparse.Namespace) -> int:
    from authgear.server.keys import ENCRYPTED_PREFIX

    settings, _ = load(args)

    async def body(s: Stores) -> Any:
        return await s.repo.list_signing_keys()

    now = int(time.time())
    rows = []
    for k in with_stores(settings, body, writes=False):
        if k.retire_at is not None and k.retire_at <= now:
            status = "retired"
        elif k.retire_at is not None:
            status = f"retiring at {when(k.retire_at)}"
        elif k.activate_at is not None and k.activate_at > now:
            status = f"published, signs from {when(k.activate_at)}"
        else:
            status = "signing"
        at_rest = "encrypted" if k.private_pem.startswith(ENCRYPTED_PREFIX) else "plaintext"
        rows.append([k.kid, when(k.created_at), at_rest, status])
    table(rows, ["KID", "CREATED (UTC)", "AT REST", "STATUS"])
    return 0


def new_kek(args: argparse.Namespace) -> int:
    from authgear.server.keys import new_key_encryption_key

    # The operator asked for a new key: it goes to stdout, for a file or a secret store.
    print(new_key_encryption_key())  # ok-secret
    return 0


def reencrypt(args: argparse.Namespace) -> int:
    from authgear.server import keys

    settings, _ = load(args)
    cipher = keys.KeyCipher.from_config(settings.config)

    async def body(s: Stores) -> int:
        return await keys.reencrypt(s.repo, cipher)

    changed = with_stores(settings, body)
    state = "encrypted under the current key-encryption key" if cipher.current else "plaintext"
    print(f"{changed} stored key{'s' if changed != 1 else ''} rewritten; all are now {state}")
    return 0


def register(subparsers: Any) -> None:
    text = "token signing keys, and their encryption at rest"
    keys = subparsers.add_parser("keys", help=text, description=text)
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    text = "add a new signing key; the old ones retire once their tokens have expired"
    p = sub.add_parser("rotate", help=text, description=text)
    add_server_options(p)
    p.set_defaults(func=rotate)
    text = "list the signing keys and their state"
    p = sub.add_parser("list", help=text, description=text)
    add_server_options(p)
    p.set_defaults(func=list_keys)
    text = "print a new key-encryption key (32 random bytes, base64) for key_encryption_key"
    p = sub.add_parser("new-kek", help=text, description=text)
    p.set_defaults(func=new_kek)
    text = (
        "store the signing keys and the refresh-token key under the configured "
        "key_encryption_key (after setting or rotating it; the server does this at start too)"
    )
    p = sub.add_parser("reencrypt", help=text, description=text)
    add_server_options(p)
    p.set_defaults(func=reencrypt)
