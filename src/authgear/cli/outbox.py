"""``authgear outbox``: the messages the server wrote to the data folder's outbox/ (no SMTP
configured), so the two-command quickstart can follow every flow: ``authgear outbox list``,
``authgear outbox show latest`` (or a number from the list; ``--raw`` for the .eml file)."""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils
import sys
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from authgear.cli._common import CLIError, data_dir

# mail/transport.py's OUTBOX; not imported here, so that building the command line needs no
# server dependency (a client-only install runs `authgear login`).
OUTBOX = "outbox"


def _folder(args: argparse.Namespace) -> Path:
    return data_dir(args) / OUTBOX


def _clean(text: str) -> str:
    """Text fit for a terminal: control characters other than newlines and tabs are shown
    escaped (an escape sequence in a message must not drive the terminal)."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


def _read(path: Path) -> EmailMessage:
    with open(path, "rb") as f:
        message = BytesParser(policy=policy.default).parse(f)
    assert isinstance(message, EmailMessage)
    return message


def _date(message: EmailMessage) -> str:
    raw = message.get("Date")
    try:
        when = email.utils.parsedate_to_datetime(str(raw)) if raw else None
    except (TypeError, ValueError):
        when = None
    if when is None:
        return "-"
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _files(folder: Path) -> list[tuple[int, Path]]:
    from authgear.server.mail.transport import message_files

    return message_files(folder)


def cmd_list(args: argparse.Namespace) -> int:
    files = _files(_folder(args))
    if not files:
        print(f"no messages in {_folder(args)}", file=sys.stderr)
        return 0
    rows = []
    for number, path in files[-max(1, args.limit) :]:
        message = _read(path)
        rows.append(
            [
                str(number),
                _date(message),
                str(message.get("To", "")),
                str(message.get("Subject", "")),
            ]
        )
    header = ["N", "DATE (UTC)", "TO", "SUBJECT"]
    rows = [[_clean(c).replace("\n", " ") for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _pick(folder: Path, which: str) -> Path:
    files = _files(folder)
    if not files:
        raise CLIError(f"no messages in {folder}")
    if which == "latest":
        return files[-1][1]
    if not which.isdigit():
        raise CLIError("give a message number from `authgear outbox list`, or latest")
    for number, path in files:
        if number == int(which):
            return path
    raise CLIError(f"no message {which} in {folder}")


def cmd_show(args: argparse.Namespace) -> int:
    path = _pick(_folder(args), args.which)
    if args.raw:
        sys.stdout.write(_clean(path.read_bytes().decode("utf-8", "replace")))
        return 0
    message = _read(path)
    for name in ("From", "To", "Date", "Subject"):
        print(f"{name}: {_clean(str(message.get(name, '')))}")
    print()
    part = message.get_body(preferencelist=("plain", "html"))
    body = part.get_content() if part is not None else ""
    print(_clean(str(body)).rstrip())
    return 0


def register(subparsers: Any) -> None:
    """Add ``authgear outbox ...`` to the top-level parser's subcommands."""
    outbox = subparsers.add_parser(
        "outbox", help="mail written to the data folder (when no smtp_url is set)"
    )
    sub = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    p = sub.add_parser("list", help="list the messages, oldest first")
    p.add_argument("--data-dir", help="data folder (default ./.authgear, env AUTHGEAR_DATA_DIR)")
    p.add_argument("--limit", type=int, default=50, help="the last N messages (default 50)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="show one message: its number, or latest")
    p.add_argument("which", nargs="?", default="latest", help="a number from the list, or latest")
    p.add_argument("--data-dir", help="data folder (default ./.authgear, env AUTHGEAR_DATA_DIR)")
    p.add_argument("--raw", action="store_true", help="print the whole .eml file")
    p.set_defaults(func=cmd_show)
