"""``authgear hash-secret``: a confidential client's secret and the hash the config keeps."""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Any

from authgear.cli._common import CLIError


def hash_secret(args: argparse.Namespace) -> int:
    from authgear.server.config import hash_client_secret

    if args.stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            raise CLIError("empty secret on standard input")
    else:
        secret = secrets.token_urlsafe(32)
        # Shown once, on purpose: the operator asked for a new secret. # ok-secret
        print(f"client secret (give it to the client, it is not stored): {secret}")  # ok-secret
    print(f"client_secret_hash: {hash_client_secret(secret)}")  # ok-secret: a hash
    return 0


def register(subparsers: Any) -> None:
    text = "make a client secret and the client_secret_hash for authgear.yaml"
    p = subparsers.add_parser("hash-secret", help=text, description=text)
    p.add_argument(
        "--stdin", action="store_true", help="hash the secret on standard input's first line"
    )
    p.set_defaults(func=hash_secret)
