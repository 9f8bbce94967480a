"""``authgear login | whoami | fetch URL | token | logout``: the SDK from a shell.

The main ``authgear`` command calls :func:`register` to add these subcommands; each sets
``func=run``. ``python -m authgear.client.cli`` runs them on their own.

``login`` remembers the endpoint and client id next to the session (``--name`` picks another
container), so later commands need no flags. ``AUTHGEAR_ENDPOINT``, ``AUTHGEAR_CLIENT_ID`` and
``AUTHGEAR_TOKEN_DIR`` set the defaults.

Errors are one line on stderr, never a traceback. Exit status: 0 success, 1 an error or no
session, 2 bad usage, 22 an HTTP error with ``fetch --fail``, 130 interrupted, 141 the
output pipe closed early.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2

from authgear import __version__
from authgear.client._base import open_url
from authgear.client._errors import AuthgearError
from authgear.client._storage import (
    FileTokenStorage,
    check_container_name,
    check_private_dir,
    default_data_dir,
    ensure_private_dir,
    key_prefix,
    read_private_file,
    write_private_file,
)
from authgear.client._sync import Authgear
from authgear.client._types import SessionState

__all__ = ["build_parser", "main", "register", "run"]

COMMANDS = ("login", "whoami", "fetch", "token", "logout")

SESSION_ENDED = "session ended: run `authgear login`"
NOT_SIGNED_IN = "not signed in: run `authgear login`"


class CLIError(Exception):
    """A one-line error for the user (exit status 1), printed as ``error: ...``."""


class NoSession(CLIError):
    """Not signed in, or the session ended: printed as it is, with what to run."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoint",
        help="Authgear endpoint, e.g. https://myapp.authgear.cloud (env AUTHGEAR_ENDPOINT; "
        "default: the one `login` remembered)",
    )
    p.add_argument(
        "--client-id",
        help="client id (env AUTHGEAR_CLIENT_ID; default: the one `login` remembered)",
    )
    p.add_argument(
        "--name",
        default="default",
        help="session name, to keep several sessions (default: %(default)s)",
    )
    p.add_argument(
        "--token-dir",
        help="private folder for the session files (env AUTHGEAR_TOKEN_DIR; default: the "
        "user data folder); refused if other users can write to it",
    )


def _add_login(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "login",
        help="sign in through the browser",
        description="Sign in through the system browser (or print the URL) and remember the "
        "endpoint and client id for later commands.",
    )
    _common(p)
    p.add_argument("--no-browser", action="store_true", help="print the URL instead of opening it")
    p.add_argument("--page", choices=["login", "signup"], help="open the login or the signup page")
    p.add_argument("--prompt", help="OIDC prompt, e.g. 'login' to ask for the password again")
    p.add_argument("--login-hint", help="pre-fill the email or phone number")
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the browser sign-in (default: %(default)g)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--port",
        type=int,
        help="listen for the redirect on this 127.0.0.1 port (default: a free one), for "
        "servers that register a fixed redirect URI",
    )
    where.add_argument(
        "--redirect-uri",
        help="the exact loopback redirect URI to listen on and send, e.g. "
        "http://127.0.0.1:8765/callback",
    )
    p.set_defaults(func=run, client_command="login")


def _add_fetch(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fetch",
        help="send an authorized request, curl-like",
        description="Send a request with the session's access token (refreshed if needed) "
        "and print the response body. Exits 1 with 'session ended' when not signed in or "
        "when the server answers 401.",
    )
    _common(p)
    p.add_argument("url", help="the URL to request")
    p.add_argument(
        "-X",
        "--request",
        dest="method",
        default=None,
        help="method (default: GET, or POST with --data)",
    )
    p.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument("-d", "--data", help="request body; @FILE reads a file, @- stdin")
    p.add_argument("-i", "--include", action="store_true", help="print status and headers")
    p.add_argument("-f", "--fail", action="store_true", help="exit 22 on HTTP >= 400")
    p.set_defaults(func=run, client_command="fetch")


def register(subparsers: Any) -> None:
    """Add the client subcommands to an ``argparse`` subparsers object."""
    _add_login(subparsers)

    p = subparsers.add_parser(
        "whoami",
        help="show the signed-in user (userinfo, as JSON)",
        description="Print the signed-in user's claims from the userinfo endpoint as JSON.",
    )
    _common(p)
    p.set_defaults(func=run, client_command="whoami")

    _add_fetch(subparsers)

    p = subparsers.add_parser(
        "token",
        help="print a fresh access token",
        description="Print an access token, refreshed if needed, for scripts.",
    )
    _common(p)
    p.set_defaults(func=run, client_command="token")

    p = subparsers.add_parser(
        "logout",
        help="revoke the session and forget it",
        description="Revoke the refresh token at the server, then forget the session.",
    )
    _common(p)
    p.add_argument("--force", action="store_true", help="forget it even if revoking fails")
    p.set_defaults(func=run, client_command="logout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authgear",
        description="The Authgear client SDK from a shell.",
        epilog="Exit status: 0 success, 1 error or no session, 2 bad usage, 22 HTTP error "
        "with fetch --fail, 130 interrupted, 141 output pipe closed.",
    )
    parser.add_argument("--version", action="version", version=f"authgear {__version__}")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


# --- settings --------------------------------------------------------------------------------


def _storage(args: argparse.Namespace) -> FileTokenStorage:
    token_dir = args.token_dir or os.environ.get("AUTHGEAR_TOKEN_DIR")
    return FileTokenStorage(token_dir if token_dir else default_data_dir())


def _config_path(storage: FileTokenStorage, name: str) -> Path:
    return storage.directory / f"{key_prefix(name)}config.json"


def _saved_settings(storage: FileTokenStorage, name: str) -> dict[str, Any]:
    """What ``login`` remembered, read with the same ownership checks as the tokens (a
    planted file could otherwise send the next sign-in to another server)."""
    path = _config_path(storage, name)
    check_private_dir(storage.directory)
    raw = read_private_file(path, secret=False)  # not secret: earlier versions wrote 0644
    if raw is None:
        return {}
    try:
        saved = json.loads(raw)
    except ValueError:
        raise CLIError(f"{path} is not JSON: delete it and run `authgear login`") from None
    return saved if isinstance(saved, dict) else {}


def _client(args: argparse.Namespace, *, login: bool = False) -> Authgear:
    """An SDK client from the flags, the environment and the remembered settings, validated
    (a bad endpoint is refused here, before anything is saved)."""
    check_container_name(args.name)
    storage = _storage(args)
    endpoint = args.endpoint or os.environ.get("AUTHGEAR_ENDPOINT")
    client_id = args.client_id or os.environ.get("AUTHGEAR_CLIENT_ID")
    if not endpoint or not client_id:
        saved = _saved_settings(storage, args.name)
        endpoint = endpoint or saved.get("endpoint")
        client_id = client_id or saved.get("client_id")
    if not endpoint or not client_id:
        raise CLIError(
            "no endpoint or client id: pass --endpoint and --client-id (or set "
            "AUTHGEAR_ENDPOINT and AUTHGEAR_CLIENT_ID) the first time"
        )
    try:
        ag = Authgear(str(client_id), str(endpoint), name=args.name, token_storage=storage)
    except ValueError as e:
        source = "" if login else " (check --endpoint, the environment, or what `login` saved)"
        raise CLIError(f"{e}{source}") from None
    ag.configure()
    return ag


def _remember(ag: Authgear) -> None:
    storage = ag.token_storage
    assert isinstance(storage, FileTokenStorage)
    ensure_private_dir(storage.directory)
    data = json.dumps({"endpoint": ag.endpoint, "client_id": ag.client_id}).encode()
    write_private_file(storage.directory, _config_path(storage, ag.name), data)


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_bytes()
        except OSError as e:
            raise CLIError(f"cannot read {data[1:]}: {e.strerror or e}") from None
    return data.encode()


def _headers(values: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for h in values:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise CLIError(f"bad header {h!r}: expected 'Name: value'")
        headers.append((name.strip(), value.strip()))
    return headers


# --- commands --------------------------------------------------------------------------------


def _login(args: argparse.Namespace) -> int:
    redirect_uri = args.redirect_uri
    if args.port is not None:
        if not 0 < args.port < 65536:
            raise CLIError(f"--port must be between 1 and 65535, got {args.port}")
        redirect_uri = f"http://127.0.0.1:{args.port}/oauth-redirect"

    def show(url: str) -> None:
        open_url(url, not args.no_browser)
        print(
            f"Waiting up to {args.timeout:g} s for the sign-in to finish in the browser "
            "(Ctrl-C to cancel)...",
            file=sys.stderr,
            flush=True,
        )

    with _client(args, login=True) as ag:
        try:
            result = ag.authenticate(
                page=args.page,
                prompt=args.prompt,
                login_hint=args.login_hint,
                open_browser=show,
                timeout=args.timeout,
                redirect_uri=redirect_uri,
            )
        except ValueError as e:  # a redirect URI that is not a loopback one
            raise CLIError(str(e)) from None
        _remember(ag)  # only settings that just worked
        print(f"Signed in as {result.sub}")
    return 0


def _whoami(ag: Authgear) -> int:
    if ag.session_state is not SessionState.AUTHENTICATED:
        raise NoSession(NOT_SIGNED_IN)
    try:
        info = ag.fetch_user_info()
    except AuthgearError:
        if ag.session_state is not SessionState.AUTHENTICATED:
            raise NoSession(SESSION_ENDED) from None
        raise
    _write(json.dumps(dict(info.raw), indent=2, sort_keys=True).encode() + b"\n")
    return 0


def _token(ag: Authgear) -> int:
    had_session = ag.session_state is SessionState.AUTHENTICATED
    token = ag.refresh_access_token_if_needed()
    if token is None:
        raise NoSession(SESSION_ENDED if had_session else NOT_SIGNED_IN)
    _write(token.encode() + b"\n")
    return 0


def _logout(ag: Authgear, force: bool) -> int:
    if ag.session_state is not SessionState.AUTHENTICATED:
        print("not signed in", file=sys.stderr)
        return 0
    ag.logout(force=force)
    print("Signed out")
    return 0


def _fetch(ag: Authgear, args: argparse.Namespace) -> int:
    headers = _headers(args.header)
    content = _body(args.data)
    if ag.session_state is not SessionState.AUTHENTICATED:
        raise NoSession(SESSION_ENDED)
    method = args.method or ("POST" if content is not None else "GET")
    r = ag.fetch(method, args.url, headers=headers, content=content)
    if args.include:
        head = [f"{r.http_version} {r.status_code} {r.reason_phrase}"]
        head += [f"{k}: {v}" for k, v in r.headers.multi_items()]
        _write(("\r\n".join(head) + "\r\n\r\n").encode())
    _write(r.content)
    if r.status_code == 401:
        still = ag.session_state is SessionState.AUTHENTICATED
        detail = f" ({args.url} refused a fresh access token with HTTP 401)" if still else ""
        raise NoSession(SESSION_ENDED + detail)
    return 22 if args.fail and r.status_code >= 400 else 0


def _write(data: bytes) -> None:
    # A large write into a pipe can return short when the reader goes away; only the next
    # write raises BrokenPipeError, so write until all is written.
    out = sys.stdout.buffer
    view = memoryview(data)
    while view:
        view = view[out.write(view) :]
    out.flush()


def _run(args: argparse.Namespace) -> int:
    command = args.client_command
    if command == "login":
        return _login(args)
    with _client(args) as ag:
        if command == "whoami":
            return _whoami(ag)
        if command == "token":
            return _token(ag)
        if command == "logout":
            return _logout(ag, args.force)
        if command == "fetch":
            return _fetch(ag, args)
    raise CLIError(f"unknown command {command!r}")


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null, so that the interpreter's final flush
    does not print a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def run(args: argparse.Namespace) -> int:
    """Run one client subcommand; returns the exit status. Errors are printed, not raised."""
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `authgear fetch ... | head`
        _quiet_stdout()
        return 141
    except NoSession as e:
        print(e, file=sys.stderr)
        return 1
    except (CLIError, AuthgearError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # e.g. an invalid --name
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (httpx2.TransportError, OSError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
