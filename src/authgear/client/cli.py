"""``authgear login | whoami | fetch URL | token | logout``: the SDK from a shell.

The main ``authgear`` command calls :func:`register` to add these subcommands; each sets
``func=run``. ``python -m authgear.client.cli`` runs them on their own.

``login`` signs in through the browser when one can be opened here, and otherwise with the
device authorization grant (RFC 8628: a URL, a code and a QR code to use on another device);
``--device`` and ``--browser`` choose. It remembers the endpoint and client id next to the
session (``--name`` picks another container), so later commands need no flags.
``AUTHGEAR_ENDPOINT``, ``AUTHGEAR_CLIENT_ID`` and ``AUTHGEAR_TOKEN_DIR`` set the defaults.

Errors are one line on stderr, never a traceback. Exit status: 0 success, 1 an error or no
session, 2 bad usage, 22 an HTTP error with ``fetch --fail``, 130 interrupted, 141 the
output pipe closed early.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx2

from authgear._version import __version__
from authgear.client._base import open_url
from authgear.client._errors import (
    AccessDeniedError,
    AuthgearError,
    DeviceCodeExpiredError,
    DeviceFlowUnsupportedError,
)
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
from authgear.client._types import AuthenticateResult, DeviceAuthorization, SessionState

__all__ = ["build_parser", "main", "register", "run"]

COMMANDS = ("login", "whoami", "fetch", "token", "logout")

SESSION_ENDED = "session ended: run `authgear login`"
NOT_SIGNED_IN = "not signed in: run `authgear login`"


class CLIError(Exception):
    """A one-line error for the user (exit status 1), printed as ``error: ...``."""


class NoSession(CLIError):
    """Not signed in, or the session ended: printed as it is, with what to run."""


class UsageError(CLIError):
    """Options that do not go together (exit status 2, like argparse's own errors)."""


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
        help="sign in (browser, or a code to enter on another device)",
        description="Sign in through the system browser when one can be opened here, "
        "otherwise on another device (a URL, a code and a QR code; RFC 8628), and remember "
        "the endpoint and client id for later commands. No browser means: no DISPLAY or "
        "WAYLAND_DISPLAY on Linux, an SSH session, or no browser found.",
    )
    _common(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--device",
        action="store_true",
        help="sign in on another device (show a URL, a code and a QR code), even if a "
        "browser could be opened here",
    )
    how.add_argument(
        "--browser",
        action="store_true",
        help="sign in through a browser on this machine, even over SSH or without a display",
    )
    p.add_argument(
        "--no-browser",
        action="store_true",
        help="browser sign-in, but print the URL instead of opening it",
    )
    p.add_argument(
        "--reauthenticate",
        action="store_true",
        help="ask the signed-in user to sign in again (before a sensitive action); the "
        "session is kept and only its ID token (auth_time) changes",
    )
    p.add_argument(
        "--max-age",
        type=int,
        default=0,
        help="with --reauthenticate: accept a sign-in at most this many seconds old "
        "(default: %(default)s, always ask)",
    )
    p.add_argument("--page", choices=["login", "signup"], help="open the login or the signup page")
    p.add_argument("--prompt", help="OIDC prompt, e.g. 'login' to ask for the password again")
    p.add_argument("--login-hint", help="pre-fill the email or phone number")
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the browser sign-in (default: %(default)g; a device code "
        "lasts as long as the server says)",
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


def no_browser_reason(
    env: Mapping[str, str], platform: str, find_browser: Callable[[], bool]
) -> str | None:
    """Why a browser cannot be opened for the user here (``None``: it can): an SSH session
    (the browser would open on the remote machine), no display on Linux and other Unixes, or
    no browser known to :mod:`webbrowser`."""
    if env.get("SSH_CONNECTION") or env.get("SSH_TTY"):
        return "this is an SSH session"
    unix = platform not in {"darwin", "win32", "cygwin"}
    if unix and not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return "there is no display"
    if not find_browser():
        return "no web browser was found"
    return None


def _browser_found() -> bool:
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def _redirect_uri(args: argparse.Namespace) -> str | None:
    if args.port is not None:
        if not 0 < args.port < 65536:
            raise CLIError(f"--port must be between 1 and 65535, got {args.port}")
        return f"http://127.0.0.1:{args.port}/oauth-redirect"
    return args.redirect_uri  # type: ignore[no-any-return]


def _login_method(args: argparse.Namespace) -> tuple[str, str | None]:
    """``("device" | "browser", why the device flow was picked on its own)``."""
    browser_only = args.no_browser or args.port is not None or args.redirect_uri
    if args.device:
        if browser_only:
            raise UsageError("--device cannot go with --no-browser, --port or --redirect-uri")
        return "device", None
    if args.browser or browser_only:
        return "browser", None
    reason = no_browser_reason(os.environ, sys.platform, _browser_found)
    return ("device", reason) if reason else ("browser", None)


def _browser_opener(args: argparse.Namespace, open_it: bool) -> Callable[[str], None]:
    def show(url: str) -> None:
        open_url(url, open_it)
        print(
            f"Waiting up to {args.timeout:g} s for the sign-in to finish in the browser "
            "(Ctrl-C to cancel)...",
            file=sys.stderr,
            flush=True,
        )

    return show


def _login(args: argparse.Namespace) -> int:
    if args.reauthenticate:
        return _reauthenticate(args)
    method, reason = _login_method(args)
    redirect_uri = _redirect_uri(args)
    with _client(args, login=True) as ag:
        result: AuthenticateResult | None = None
        if method == "device":
            if reason is not None:
                _say(f"Signing in on another device: {reason} (--browser to use one here).")
            try:
                result = _device_login(ag)
            except DeviceFlowUnsupportedError:
                if reason is None:  # --device: say so instead of doing something else
                    raise
                _say("This server offers no device sign-in: open the URL below on this machine.")
        if result is None:
            try:
                result = ag.authenticate(
                    page=args.page,
                    prompt=args.prompt,
                    login_hint=args.login_hint,
                    open_browser=_browser_opener(args, method == "browser" and not args.no_browser),
                    timeout=args.timeout,
                    redirect_uri=redirect_uri,
                )
            except ValueError as e:  # a redirect URI that is not a loopback one
                raise CLIError(str(e)) from None
        _remember(ag)  # only settings that just worked
        print(f"Signed in as {result.sub}")
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _device_login(ag: Authgear) -> AuthenticateResult:
    ui = DeviceLoginUI(sys.stderr)
    try:
        return ag.authenticate_device(ui.show)
    except DeviceCodeExpiredError:
        raise CLIError(
            "the code expired before the sign-in was approved: run `authgear login` again"
        ) from None
    except AccessDeniedError:
        raise CLIError("the sign-in was denied on the other device") from None
    finally:
        ui.close()


def _reauthenticate(args: argparse.Namespace) -> int:
    if args.device:
        raise UsageError("--reauthenticate needs a browser; it cannot go with --device")
    if args.max_age < 0:
        raise UsageError(f"--max-age must be 0 or more, got {args.max_age}")
    redirect_uri = _redirect_uri(args)
    with _client(args) as ag:
        if ag.session_state is not SessionState.AUTHENTICATED:
            raise NoSession(NOT_SIGNED_IN)
        reason = None
        if not (args.browser or args.port is not None or args.redirect_uri):
            reason = no_browser_reason(os.environ, sys.platform, _browser_found)
        if reason is not None and not args.no_browser:
            _say(f"Cannot open a browser here ({reason}): open the URL below on this machine.")
        try:
            result = ag.reauthenticate(
                max_age=args.max_age,
                open_browser=_browser_opener(args, reason is None and not args.no_browser),
                timeout=args.timeout,
                redirect_uri=redirect_uri,
            )
        except ValueError as e:
            raise CLIError(str(e)) from None
        when = result.auth_time.isoformat() if result.auth_time else "an unknown time"
        print(f"Reauthenticated as {result.sub} (signed in at {when})")
    return 0


# --- the device sign-in on a terminal ---------------------------------------------------------

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def qr_text(data: str) -> str | None:
    """``data`` as a QR code drawn with half blocks (two modules a character), or ``None``
    when segno is not installed."""
    try:
        import segno
    except ImportError:
        return None
    out = io.StringIO()
    segno.make(data, error="l", micro=False).terminal(out=out, compact=True, border=2)
    return out.getvalue()


class DeviceLoginUI:
    """What ``authgear login`` shows while a device sign-in waits: the URL and the code, and
    on a terminal a QR code of ``verification_uri_complete`` and a spinner with the time
    left (redrawn in place); elsewhere (a pipe, a CI log) plain lines only."""

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self.clock = clock
        self.tty = stream.isatty()
        self._stop = threading.Event()
        self._spinner: threading.Thread | None = None

    def show(self, authorization: DeviceAuthorization) -> None:
        a = authorization
        lines = [
            "",
            "To sign in, open this page in a browser on any device:",
            "",
            f"    {a.verification_uri}",
            "",
            "and enter the code:",
            "",
            f"    {a.user_code}",
            "",
        ]
        qr = qr_text(a.verification_uri_complete) if a.verification_uri_complete else None
        if self.tty and qr is not None and _can_encode(self.stream, qr):
            lines += ["or scan this QR code with a phone (it carries the code):", "", qr]
        if not self.tty:
            lines.append(
                f"Waiting up to {a.expires_in:.0f} s for the sign-in to be approved "
                "(Ctrl-C to cancel)..."
            )
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        if self.tty:
            self._spinner = threading.Thread(
                target=self._spin, args=(a.expires_at,), name="authgear-spinner", daemon=True
            )
            self._spinner.start()

    def _spin(self, expires_at: float) -> None:
        frames = _SPINNER if _can_encode(self.stream, _SPINNER) else "|/-\\"
        i = 0
        while not self._stop.wait(0.0 if i == 0 else 0.1):
            left = max(0, int(expires_at - self.clock()))
            self.stream.write(
                f"\r{frames[i % len(frames)]} Waiting for approval... {left // 60}:"
                f"{left % 60:02d} left (Ctrl-C to cancel)\x1b[K"
            )
            self.stream.flush()
            i += 1

    def close(self) -> None:
        """Stop the spinner and clear its line, so that what follows starts clean."""
        spinner, self._spinner = self._spinner, None
        if spinner is None:
            return
        self._stop.set()
        if spinner.ident is not None:  # Ctrl-C may come while it is being started
            spinner.join()
        self.stream.write("\r\x1b[K")
        self.stream.flush()


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
    except UsageError as e:
        print(f"authgear login: error: {e}", file=sys.stderr)
        return 2
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
