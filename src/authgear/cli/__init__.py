"""The ``authgear`` command: one module per command family.

Server side: ``serve``, ``users``, ``keys``, ``db``, ``admin``, ``hash-secret``, ``outbox``.
The SDK's commands (``login``, ``whoami``, ``fetch``, ``token``, ``logout``) come from
:mod:`authgear.client.cli`. Whatever goes wrong, a command prints one line on standard error
and exits non-zero; never a traceback (``--traceback`` shows one for unexpected errors).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from authgear._version import __version__
from authgear.cli import admin, clients, db, keys, outbox, serve, users
from authgear.cli._common import CLIError

__all__ = ["CLIError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authgear",
        description="Authgear in Python: the auth server, its administration, and the SDK "
        "from a shell.",
    )
    parser.add_argument("--version", action="version", version=f"authgear {__version__}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an unexpected error, show the Python traceback (for bug reports)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for family in (serve, users, keys, db, clients, admin, outbox):
        family.register(sub)
    _register_client_commands(sub)
    return parser


def _register_client_commands(sub: Any) -> None:
    try:
        from authgear.client import cli as client_cli
    except ImportError:
        return
    register: Callable[[Any], None] | None = getattr(client_cli, "register", None)
    if register is not None:
        register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        return _closed_pipe()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except CLIError as e:
        return _fail(str(e))
    except ModuleNotFoundError as e:
        return _fail(
            f"missing dependency {e.name!r}; install the server extra: "
            "pip install 'authgear[server]'"
        )
    except KeyboardInterrupt:
        return _fail("cancelled", 130)
    except BrokenPipeError:
        raise
    except Exception as e:
        if args.traceback:
            raise
        from authgear.cli._common import describe_error

        return _fail(describe_error(e))


def _fail(message: str, status: int = 1) -> int:
    with contextlib.suppress(BrokenPipeError):
        print(f"authgear: {message}", file=sys.stderr)
    return status


def _closed_pipe() -> int:
    """The reader went away (``authgear ... | head``): stop quietly, as a Unix tool would.
    Standard output is pointed at /dev/null so flushing it at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the closed pipe


if __name__ == "__main__":
    sys.exit(main())
