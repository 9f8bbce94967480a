"""`authgear login` on a machine without a browser (the device authorization grant) and
`authgear login --reauthenticate`, run as a user runs them: a separate process, in a
pseudo-terminal (python ``pty``) or with pipes, against npm oidc-provider or a scripted
server. Ctrl-C (SIGINT) leaves nothing half-written; every failure is one line."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from client_support import (
    OidcProvider,
    Reply,
    ScriptedServer,
    browser_login,
    device_browser,
    discovery,
)

from authgear.client import FileTokenStorage
from authgear.client.cli import no_browser_reason

CLI = [sys.executable, "-m", "authgear.client.cli"]
URL_AND_CODE = re.compile(rb"(http://\S+/device)\s+and enter the code:\s+(\S+)")
SPINNER = re.compile(rb"Waiting for approval\.\.\. \d+:\d\d left \(Ctrl-C to cancel\)")
ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def headless_env(token_dir: Path, **extra: str) -> dict[str, str]:
    """No display, no SSH: what a container or a CI job looks like."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DISPLAY", "WAYLAND_DISPLAY", "SSH_CONNECTION", "SSH_TTY", "BROWSER"}
    }
    env.update(AUTHGEAR_TOKEN_DIR=str(token_dir), PYTHONUTF8="1", **extra)
    return env


class Terminal:
    """The CLI with a pseudo-terminal as stdin, stdout and stderr."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [*CLI, *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.master = master
        self.out = b""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the process closed the terminal
            return False
        self.out += data
        return bool(data)

    def expect(self, pattern: re.Pattern[bytes], timeout: float = 60) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while (m := pattern.search(self.out)) is None:
            ended = not self._read(0.1) and self.proc.poll() is not None
            if ended or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern.pattern!r} in {self.out!r}")
        return m

    def finish(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self._read(0.1) and time.monotonic() < deadline:
            pass
        code = self.proc.wait(timeout=10)
        os.close(self.master)
        return code

    def screen(self) -> list[str]:
        """The lines as the terminal shows them: what a carriage return redrew is gone,
        escape sequences are dropped, empty lines skipped."""
        lines = []
        for raw in self.out.decode("utf-8", "replace").split("\n"):
            visible = ESCAPES.sub("", raw.rstrip("\r").split("\r")[-1])
            if visible.strip():
                lines.append(visible)
        return lines


def login(issuer: str, client_id: str = "opaque-client", *extra: str) -> list[str]:
    return [*CLI, "login", "--endpoint", issuer, "--client-id", client_id, *extra]


def files_in(token_dir: Path) -> list[str]:
    return sorted(p.name for p in token_dir.iterdir()) if token_dir.exists() else []


# --- choosing the flow ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "platform", "browser", "reason"),
    [
        ({"DISPLAY": ":0"}, "linux", True, None),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True, None),
        ({}, "linux", True, "there is no display"),
        ({}, "freebsd14", True, "there is no display"),
        ({"DISPLAY": ":0", "SSH_CONNECTION": "10.0.0.1 5 10.0.0.2 22"}, "linux", True, "SSH"),
        ({"SSH_TTY": "/dev/pts/3"}, "darwin", True, "SSH"),
        ({}, "darwin", True, None),  # macOS needs no DISPLAY
        ({}, "win32", True, None),
        ({}, "darwin", False, "no web browser was found"),
        ({"DISPLAY": ":0"}, "linux", False, "no web browser was found"),
    ],
)
def test_cli_picks_the_device_flow_without_display_over_ssh_or_without_a_browser(
    env: dict[str, str], platform: str, browser: bool, reason: str | None
) -> None:
    got = no_browser_reason(env, platform, lambda: browser)
    assert got is None if reason is None else reason in (got or "")


# --- device sign-in in a terminal -------------------------------------------------------------


def test_cli_device_login_in_a_terminal_shows_url_code_qr_and_spinner_then_signs_in(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    env = headless_env(tmp_path)
    term = Terminal(
        "login", "--endpoint", oidc_provider.issuer, "--client-id", "opaque-client", env=env
    )
    uri, code = (g.decode() for g in term.expect(URL_AND_CODE).groups())
    assert uri == oidc_provider.issuer + "/device"
    term.expect(SPINNER)  # a spinner with the time left, redrawn in place
    text = term.out.decode()
    assert "Signing in on another device: there is no display" in text
    assert "scan this QR code" in text and "▀" in text  # drawn with half blocks
    # a wrong code is refused by the page; the CLI keeps waiting for the right one
    assert "incorrect" in device_browser(uri, user_code="BCDF-GHJK")
    assert term.proc.poll() is None
    assert "Sign-in Success" in device_browser(uri, "olivia", user_code=code)
    term.expect(re.compile(rb"Signed in as olivia"))
    assert term.finish() == 0
    assert "Traceback" not in term.out.decode()
    assert term.screen()[-1] == "Signed in as olivia"  # the spinner line was cleared
    # the session and the settings were saved: the next command needs no flags
    who = subprocess.run(
        [*CLI, "whoami"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["sub"] == "olivia"


@pytest.mark.parametrize("when", ["waiting", "at once"])
def test_cli_device_login_ctrl_c_exits_130_with_one_line_and_writes_nothing(
    oidc_provider: OidcProvider, tmp_path: Path, when: str
) -> None:
    token_dir = tmp_path / "tokens"
    term = Terminal(
        "login",
        "--device",
        "--endpoint",
        oidc_provider.issuer,
        "--client-id",
        "opaque-client",
        env=headless_env(token_dir),
    )
    term.expect(SPINNER if when == "waiting" else URL_AND_CODE)
    if when == "waiting":
        polls = len(oidc_provider.stats()["device_polls"].get("opaque-client", []))
        deadline = time.monotonic() + 30
        while len(oidc_provider.stats()["device_polls"].get("opaque-client", [])) == polls:
            assert time.monotonic() < deadline, "the CLI never polled"
            time.sleep(0.05)
    term.proc.send_signal(signal.SIGINT)
    assert term.finish() == 130
    text = term.out.decode()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert term.screen()[-1] == "cancelled"  # one line, the spinner cleared before it
    # no token file, no settings, no temp file; at most the empty refresh lock
    assert [f for f in files_in(token_dir) if not f.endswith(".lock")] == []


def test_cli_device_login_expired_code_is_one_line_and_saves_nothing(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    term = Terminal(
        "login",
        "--device",
        "--endpoint",
        oidc_provider.issuer,
        "--client-id",
        "short-device-client",
        env=headless_env(tmp_path),
    )
    assert term.finish() == 1
    assert "Traceback" not in term.out.decode()
    assert term.screen()[-1] == (
        "error: the code expired before the sign-in was approved: run `authgear login` again"
    )
    assert [f for f in files_in(tmp_path) if not f.endswith(".lock")] == []


def test_cli_device_login_denied_is_one_line(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    term = Terminal(
        "login",
        "--device",
        "--endpoint",
        oidc_provider.issuer,
        "--client-id",
        "opaque-client",
        env=headless_env(tmp_path),
    )
    uri, code = (g.decode() for g in term.expect(URL_AND_CODE).groups())
    device_browser(uri, user_code=code, deny=True)
    assert term.finish() == 1
    assert term.screen()[-1] == "error: the sign-in was denied on the other device"
    assert "Traceback" not in term.out.decode()


# --- device sign-in without a terminal --------------------------------------------------------


def test_cli_device_login_without_a_terminal_prints_plain_lines(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        login(oidc_provider.issuer, "opaque-client", "--device"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=headless_env(tmp_path),
    )
    assert proc.stderr is not None
    err = b""
    while b"Waiting up to" not in err:
        line = proc.stderr.readline()
        assert line, err
        err += line
    uri, code = (g.decode() for g in URL_AND_CODE.search(err).groups())  # type: ignore[union-attr]
    device_browser(uri, "peggy", user_code=code)
    out, rest = proc.communicate(timeout=60)
    err += rest
    assert proc.returncode == 0, err
    assert out.decode().strip() == "Signed in as peggy"
    text = err.decode()
    assert "\r" not in text and "\x1b" not in text  # no spinner, no cursor moves
    assert "▀" not in text  # no QR code in a log
    assert "Waiting up to 600 s for the sign-in to be approved (Ctrl-C to cancel)..." in text


# --- what the server offers -------------------------------------------------------------------


def test_cli_device_forced_on_a_server_without_device_endpoint_is_one_line(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    r = subprocess.run(
        [*CLI, "login", "--device", "--endpoint", scripted.url, "--client-id", "cli-app"],
        capture_output=True,
        text=True,
        env=headless_env(tmp_path),
        timeout=60,
        check=False,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {scripted.url} offers no device sign-in (its discovery document has no "
        "device_authorization_endpoint); sign in through a browser"
    ]


def test_cli_without_a_browser_on_a_server_without_device_endpoint_prints_the_url(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    r = subprocess.run(
        [*CLI, "login", "--endpoint", scripted.url, "--client-id", "cli-app", "--timeout", "1"],
        capture_output=True,
        text=True,
        env=headless_env(tmp_path),
        timeout=60,
        check=False,
    )
    assert "This server offers no device sign-in" in r.stderr
    assert f"    {scripted.url}/oauth2/authorize?" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: sign-in did not finish within 1 seconds"
    assert "Traceback" not in r.stderr


def test_cli_device_login_hostile_user_code_never_reaches_the_terminal(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """A server sending terminal escape sequences as the user code (to redraw the screen
    or plant a link) gets a one-line error; not one escape byte is printed."""
    doc = {
        **discovery(scripted.url),
        "device_authorization_endpoint": scripted.url + "/device_authorization",
    }
    scripted.routes["/.well-known/openid-configuration"] = lambda _s: Reply(200, doc)
    scripted.routes["/device_authorization"] = lambda _s: Reply(
        200,
        {
            "device_code": "dc",
            "user_code": "\x1b]8;;https://evil.example\x07ABCD\x1b[2J",
            "verification_uri": scripted.url + "/device",
            "expires_in": 600,
        },
    )
    term = Terminal(
        "login", "--device", "--endpoint", scripted.url, "--client-id", "cli-app",
        env=headless_env(tmp_path),
    )  # fmt: skip
    assert term.finish() == 1
    assert b"\x1b]8" not in term.out and b"\x1b[2J" not in term.out
    assert term.screen() == [
        "error: device authorization endpoint answered without a printable user_code"
    ]
    assert scripted.count("/oauth2/token") == 0


def test_cli_device_with_port_is_a_usage_error(tmp_path: Path) -> None:
    r = subprocess.run(
        [*CLI, "login", "--device", "--port", "8765", "--endpoint", "http://x", "--client-id", "c"],
        capture_output=True,
        text=True,
        env=headless_env(tmp_path),
        timeout=60,
        check=False,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "authgear login: error: --device cannot go with --no-browser, --port or --redirect-uri"
    )


# --- reauthentication -------------------------------------------------------------------------


def browser_login_cli(op: OidcProvider, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        login(op.issuer, "opaque-client", "--no-browser", "--timeout", "60", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def complete_in_browser(proc: subprocess.Popen[str], user: str) -> tuple[int, str, str]:
    assert proc.stderr is not None
    err = ""
    url = ""
    for line in proc.stderr:
        err += line
        if line.strip().startswith("http"):
            url = line.strip()
            break
    assert url, err
    redirect = dict(parse_qsl(urlsplit(url).query))["redirect_uri"]
    page = httpx2.get(browser_login(url, user, stop_prefix=redirect), timeout=30)
    assert page.status_code == 200, page.text
    out, rest = proc.communicate(timeout=60)
    return proc.returncode, out, err + rest


def test_cli_login_reauthenticate_moves_auth_time_and_keeps_the_session(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    env = headless_env(tmp_path)
    code, out, err = complete_in_browser(
        browser_login_cli(oidc_provider, env, "--prompt", "consent"), "quinn"
    )
    assert code == 0, err
    storage = FileTokenStorage(tmp_path)
    [session_file] = tmp_path.glob("authgear_default.*.json")
    key = session_file.name.removeprefix("authgear_").removesuffix(".json")
    before = storage.load(key)
    assert before is not None
    time.sleep(1.1)  # auth_time counts whole seconds
    reauth = subprocess.Popen(
        [*CLI, "login", "--reauthenticate", "--no-browser", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    code, out, err = complete_in_browser(reauth, "quinn")
    assert code == 0, err
    assert re.fullmatch(r"Reauthenticated as quinn \(signed in at \S+\)\n", out), out
    after = storage.load(key)
    assert after is not None and after.refresh_token == before.refresh_token
    assert after.id_token != before.id_token


def test_cli_login_reauthenticate_not_signed_in_is_one_line(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    r = subprocess.run(
        login(oidc_provider.issuer, "opaque-client", "--reauthenticate"),
        capture_output=True,
        text=True,
        env=headless_env(tmp_path),
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["not signed in: run `authgear login`"]


def test_cli_login_reauthenticate_a_user_who_cannot_is_one_line(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    env = headless_env(tmp_path)
    code, _out, err = complete_in_browser(
        browser_login_cli(oidc_provider, env, "--prompt", "consent"), "passwordless-rita"
    )
    assert code == 0, err
    r = subprocess.run(
        [*CLI, "login", "--reauthenticate", "--no-browser"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("error: this user cannot reauthenticate")
