"""``authgear login | whoami | fetch URL | token | logout``: the SDK from a shell.

The main ``authgear`` command calls :func:`register` to add these subcommands; each sets
``func=run``. ``python -m authgear.client.cli`` runs them on their own.

``login`` remembers the endpoint and client id next to the session (``--name`` picks another
container), so later commands need no flags. ``AUTHGEAR_ENDPOINT``, ``AUTHGEAR_CLIENT_ID`` and
``AUTHGEAR_TOKEN_DIR`` set the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2

from authgear.client._errors import AuthgearError
from authgear.client._storage import FileTokenStorage, default_data_dir, key_prefix
from authgear.client._sync import Authgear
from authgear.client._types import SessionState

__all__ = ["main", "register", "run"]

COMMANDS = ("login", "whoami", "fetch", "token", "logout")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", help="Authgear endpoint (env AUTHGEAR_ENDPOINT)")
    p.add_argument("--client-id", help="client id (env AUTHGEAR_CLIENT_ID)")
    p.add_argument("--name", default="default", help="session container name")
    p.add_argument(
        "--token-dir",
        help="folder for the session file (env AUTHGEAR_TOKEN_DIR; default: user data folder)",
    )


def register(subparsers: Any) -> None:
    """Add the client subcommands to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("login", help="sign in through the browser")
    _common(p)
    p.add_argument("--no-browser", action="store_true", help="print the URL instead")
    p.add_argument("--page", choices=["login", "signup"])
    p.add_argument("--prompt")
    p.add_argument("--login-hint")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (300)")
    p.set_defaults(func=run, client_command="login")

    p = subparsers.add_parser("whoami", help="show the signed-in user (userinfo)")
    _common(p)
    p.set_defaults(func=run, client_command="whoami")

    p = subparsers.add_parser("fetch", help="send an authorized request, curl-like")
    _common(p)
    p.add_argument("url")
    p.add_argument("-X", "--request", dest="method", default=None, help="method (GET)")
    p.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument("-d", "--data", help="request body; @FILE reads a file, @- stdin")
    p.add_argument("-i", "--include", action="store_true", help="print status and headers")
    p.add_argument("-f", "--fail", action="store_true", help="exit 22 on HTTP >= 400")
    p.set_defaults(func=run, client_command="fetch")

    p = subparsers.add_parser("token", help="print a fresh access token")
    _common(p)
    p.set_defaults(func=run, client_command="token")

    p = subparsers.add_parser("logout", help="revoke the session and forget it")
    _common(p)
    p.add_argument("--force", action="store_true", help="forget it even if revoking fails")
    p.set_defaults(func=run, client_command="logout")


def _config_path(storage: FileTokenStorage, name: str) -> Path:
    return storage.directory / f"{key_prefix(name)}config.json"


def _client(args: argparse.Namespace, *, remember: bool = False) -> Authgear:
    token_dir = args.token_dir or os.environ.get("AUTHGEAR_TOKEN_DIR")
    storage = FileTokenStorage(token_dir if token_dir else default_data_dir())
    saved: dict[str, Any] = {}
    path = _config_path(storage, args.name)
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(path.read_text())
    endpoint = args.endpoint or os.environ.get("AUTHGEAR_ENDPOINT") or saved.get("endpoint")
    client_id = args.client_id or os.environ.get("AUTHGEAR_CLIENT_ID") or saved.get("client_id")
    if not endpoint or not client_id:
        raise AuthgearError(
            "no endpoint or client id: pass --endpoint and --client-id (or set "
            "AUTHGEAR_ENDPOINT and AUTHGEAR_CLIENT_ID) the first time"
        )
    if remember:
        storage.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(json.dumps({"endpoint": endpoint, "client_id": client_id}))
    ag = Authgear(str(client_id), str(endpoint), name=args.name, token_storage=storage)
    ag.configure()
    return ag


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        return Path(data[1:]).read_bytes()
    return data.encode()


def _not_signed_in() -> int:
    print("not signed in: run 'authgear login'", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    command = args.client_command
    if command == "login":
        with _client(args, remember=True) as ag:
            result = ag.authenticate(
                page=args.page,
                prompt=args.prompt,
                login_hint=args.login_hint,
                open_browser=not args.no_browser,
                timeout=args.timeout,
            )
            print(f"Signed in as {result.sub}")
        return 0
    with _client(args) as ag:
        if command == "whoami":
            if ag.session_state is not SessionState.AUTHENTICATED:
                return _not_signed_in()
            info = ag.fetch_user_info()
            print(json.dumps(dict(info.raw), indent=2, sort_keys=True))
            return 0
        if command == "token":
            token = ag.refresh_access_token_if_needed()
            if token is None:
                return _not_signed_in()
            print(token)
            return 0
        if command == "logout":
            if ag.session_state is not SessionState.AUTHENTICATED:
                print("not signed in", file=sys.stderr)
                return 0
            ag.logout(force=args.force)
            print("Signed out")
            return 0
        if command == "fetch":
            headers: list[tuple[str, str]] = []
            for h in args.header:
                name, sep, value = h.partition(":")
                if not sep:
                    raise AuthgearError(f"bad header {h!r}: expected 'Name: value'")
                headers.append((name.strip(), value.strip()))
            content = _body(args.data)
            method = args.method or ("POST" if content is not None else "GET")
            r = ag.fetch(method, args.url, headers=headers, content=content)
            out = sys.stdout.buffer
            if args.include:
                out.write(f"{r.http_version} {r.status_code} {r.reason_phrase}\r\n".encode())
                for k, v in r.headers.multi_items():
                    out.write(f"{k}: {v}\r\n".encode())
                out.write(b"\r\n")
            out.write(r.content)
            out.flush()
            return 22 if args.fail and r.status_code >= 400 else 0
    raise AuthgearError(f"unknown command {command!r}")


def run(args: argparse.Namespace) -> int:
    """Run one client subcommand; returns the exit status. Errors are printed, not raised."""
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except AuthgearError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except httpx2.TransportError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="authgear", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
