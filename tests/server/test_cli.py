"""The `authgear` command as a whole: its help, version, errors and pipes."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from agtest.server import AUTHGEAR, ServerProcess, free_port, new_email
from agtest.services import Postgres
from authgear import __version__
from authgear.cli import build_parser

PASSWORD = "correct horse battery"
# Registered by authgear.client.cli: the SDK helper owns their help texts.
CLIENT_COMMANDS = {"login", "whoami", "fetch", "token", "logout"}


def run_cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUTHGEAR, *args], input=input, capture_output=True, text=True, timeout=120
    )


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("authgear: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def _walk(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not path and name in CLIENT_COMMANDS:
                    continue
                found.append(
                    (f"{path} {name}".strip(), argparse.Action([], name, help=helps.get(name)))
                )
                found += _walk(sub, f"{path} {name}".strip())
        elif not isinstance(action, argparse._HelpAction):
            found.append((path, action))
    return found


def test_every_server_command_and_option_has_help_text() -> None:
    missing = [
        f"{where}: {action.option_strings or action.dest}"
        for where, action in _walk(build_parser(), "")
        if not action.help
    ]
    assert missing == []


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"authgear {__version__}"


def test_output_into_a_closed_pipe_exits_quietly() -> None:
    """`authgear ... | head -0`: the reader is gone before anything is printed."""
    for args in (["--help"], ["hash-secret"]):
        proc = subprocess.Popen([AUTHGEAR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        # Quiet: no traceback, no "Exception ignored" at exit; 141 as if killed by SIGPIPE
        # (argparse's --help exits 0 before its buffered text meets the pipe).
        assert proc.wait(120) in ({0, 141} if args == ["--help"] else {141}), err
        assert err == ""


@pytest.mark.parametrize("failure", ["wrong password", "nothing listening"])
def test_unreachable_database_is_one_line_naming_it(
    failure: str, postgres: Postgres, tmp_path: Path
) -> None:
    port = postgres.port if failure == "wrong password" else free_port()
    url = f"postgresql://authgear:not-the-password@127.0.0.1:{port}/authgear"
    for args in (["keys", "list"], ["admin", "users", "list"], ["db", "upgrade"]):
        line = one_line_error(run_cli(*args, "--database-url", url, "--data-dir", str(tmp_path)))
        assert f"postgresql://authgear:***@127.0.0.1:{port}/authgear" in line
        assert "not-the-password" not in line
        expected = "password authentication failed" if port == postgres.port else "refused"
        assert expected in line


def test_users_create_goes_through_the_admin_operation(authgear_server: ServerProcess) -> None:
    """`authgear users create` checks roles as `authgear admin users create` does."""
    d = str(authgear_server.data_dir)
    bad_role = run_cli(
        "users", "create", new_email(), "--password-stdin", "--role", "no spaces allowed",
        "--data-dir", d, input=PASSWORD + "\n",
    )  # fmt: skip
    assert "a role is 1 to 64 of" in one_line_error(bad_role)
    weak = run_cli(
        "users", "create", new_email(), "--password-stdin", "--data-dir", d, input="short\n"
    )
    assert "password not accepted" in one_line_error(weak)
