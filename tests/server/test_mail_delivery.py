"""Mail on real parts: the server sends to a real SMTP server (aiosmtpd) on a loopback port,
over plain SMTP, STARTTLS with a login, and TLS from the first byte; a dead or refusing SMTP
server gets retries and log lines, never a 500, and the log never holds a code, a link or the
SMTP password."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agtest.mail import (
    SMTPSink,
    code_of,
    html_of,
    link_of,
    make_cert,
    outbox_messages,
    server_context,
    text_of,
    wait_outbox,
)
from agtest.pages import Pages
from agtest.server import ServerProcess, free_port, new_email, server_config

PASSWORD = "correct horse battery"


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own on SQLite, for what does not depend on storage (the transport)."""
    port = free_port()
    server = ServerProcess(tmp_path / "data", port, server_config(port))
    yield server
    server.stop()


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path / "tls")


def _wait_log(server: ServerProcess, pattern: str, timeout: float = 120) -> str:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, server.log()):
            return server.log()
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not in the log:\n{server.log()[-3000:]}")


def _forgot(server: ServerProcess, email: str) -> None:
    pages = Pages(server.url)
    try:
        r = pages.forgot(email)
        assert r.status_code == 200, r.text
        assert "we sent it a code" in r.text
    finally:
        pages.close()


def test_reset_mail_over_starttls_with_login_reaches_a_real_smtp_server(
    fresh_server: ServerProcess, cert: tuple[Path, Path]
) -> None:
    sink = SMTPSink(
        free_port(),
        tls=server_context(*cert),
        require_starttls=True,
        credentials=("mailer", "smtp-pa55word"),
    ).start()
    try:
        server = fresh_server
        server.config["smtp_url"] = (
            f"smtp+starttls://mailer:smtp-pa55word@127.0.0.1:{sink.port}?ca_file={cert[0]}"
        )
        server.config["email_from"] = "Example <no-reply@example.com>"
        server.config["log_level"] = "info"
        server.start()
        email = new_email()
        server.create_user(email, PASSWORD)
        _forgot(server, email)
        message = sink.wait(email, "reset_password")
        assert sink.logins == ["mailer"]
        assert message["From"] == "Example <no-reply@example.com>"
        assert message["Auto-Submitted"] == "auto-generated"
        code, link = code_of(message), link_of(message)
        assert link.startswith(server.url + "/reset-password?code=")
        assert code in html_of(message) and link.replace("&", "&amp;") in html_of(message)
        log = _wait_log(server, r"mail reset_password sent to u\*\*\*@example\.com")
        for secret in (code, link.rpartition("=")[2], "smtp-pa55word", email):
            assert secret not in log
        # Nothing went to the outbox.
        assert outbox_messages(server.data_dir) == []
    finally:
        sink.stop()


def test_verification_mail_over_smtps_tls_from_the_first_byte(
    sqlite_server: ServerProcess, cert: tuple[Path, Path]
) -> None:
    sink = SMTPSink(free_port(), tls=server_context(*cert), implicit_tls=True).start()
    try:
        server = sqlite_server
        server.config["smtp_url"] = f"smtps://127.0.0.1:{sink.port}?ca_file={cert[0]}"
        server.start()
        email = new_email()
        pages = Pages(server.url)
        assert pages.signup(email, PASSWORD).status_code == 303
        r = pages.post("/settings/account/verify", {}, page="/settings/account")
        assert r.status_code == 303 and r.headers["location"] == "/verify-email"
        message = sink.wait(email, "verify_email")
        assert re.fullmatch(r"\d{6}", code_of(message))
        assert "Subject" in message and code_of(message) in message["Subject"]
        pages.close()
    finally:
        sink.stop()


def test_untrusted_smtp_certificate_is_refused_and_nothing_is_sent_in_clear(
    sqlite_server: ServerProcess, cert: tuple[Path, Path]
) -> None:
    """Without ca_file the self-signed certificate is not trusted: STARTTLS fails, the mail is
    retried and dropped with a log line, and the server never falls back to plain text."""
    sink = SMTPSink(free_port(), tls=server_context(*cert), require_starttls=False).start()
    try:
        server = sqlite_server
        server.config["smtp_url"] = f"smtp://127.0.0.1:{sink.port}?starttls=true"
        server.config["mail_send_attempts"] = 2
        server.config["mail_retry_delay"] = 0.1
        server.start()
        email = new_email()
        server.create_user(email, PASSWORD)
        _forgot(server, email)
        log = _wait_log(server, r"mail reset_password to u\*\*\*@example\.com failed after 2")
        assert "TLS failed" in log
        assert sink.messages == []
    finally:
        sink.stop()


def test_dead_smtp_server_gets_retries_and_the_mail_arrives_once_it_is_back(
    fresh_server: ServerProcess,
) -> None:
    port = free_port()
    server = fresh_server
    server.config["smtp_url"] = f"smtp://127.0.0.1:{port}"
    server.config["mail_send_attempts"] = 12
    server.config["mail_retry_delay"] = 0.2
    server.start()
    email = new_email()
    server.create_user(email, PASSWORD)
    _forgot(server, email)  # answered at once: the mail waits in the queue
    _wait_log(server, r"failed \(attempt 2 of 12\): ConnectionRefusedError; retrying")
    sink = SMTPSink(port).start()
    try:
        message = sink.wait(email, "reset_password", timeout=180)
        log = server.log()
        assert code_of(message) not in log
        assert link_of(message).rpartition("=")[2] not in log
        # The user lost nothing: the code that arrived late still resets the password.
        pages = Pages(server.url)
        r = pages.post(
            "/reset-password",
            {
                "email": email,
                "code": code_of(message),
                "password": "a brand new passphrase",
                "password_confirm": "a brand new passphrase",
            },
            page="/forgot-password",
        )
        assert r.status_code == 303, r.text
        pages.close()
    finally:
        sink.stop()


def test_refusing_smtp_server_gets_retries_then_one_error_line_without_the_code(
    sqlite_server: ServerProcess,
) -> None:
    sink = SMTPSink(free_port(), reject="451 4.3.0 try again later").start()
    try:
        server = sqlite_server
        server.config["smtp_url"] = f"smtp://127.0.0.1:{sink.port}"
        server.config["mail_send_attempts"] = 3
        server.config["mail_retry_delay"] = 0.1
        server.start()
        email = new_email()
        server.create_user(email, PASSWORD)
        _forgot(server, email)
        log = _wait_log(server, r"failed after 3 attempts, giving up: SMTP server answered 451")
        assert log.count("retrying in") == 2
        refused = sink.wait_refused(3)
        body = refused[0].decode()
        code = re.search(r"^\s+(\d{6})\s*$", body, re.MULTILINE)
        token = re.search(r"\?code=([0-9A-Z]{32})", body)
        assert code and token
        assert code.group(1) not in log and token.group(1) not in log
    finally:
        sink.stop()


def test_permanent_refusal_is_not_retried(sqlite_server: ServerProcess) -> None:
    sink = SMTPSink(free_port(), reject="550 5.1.1 no such mailbox").start()
    try:
        server = sqlite_server
        server.config["smtp_url"] = f"smtp://127.0.0.1:{sink.port}"
        server.config["mail_retry_delay"] = 0.1
        server.start()
        email = new_email()
        server.create_user(email, PASSWORD)
        _forgot(server, email)
        log = _wait_log(server, r"failed after 1 attempt, giving up: SMTP server answered 550")
        assert "retrying" not in log
        assert len(sink.refused) == 1
    finally:
        sink.stop()


def test_outbox_files_are_private_and_authgear_outbox_shows_them(
    sqlite_server: ServerProcess,
) -> None:
    import subprocess

    from agtest.server import AUTHGEAR

    server = sqlite_server
    server.start()
    email = new_email()
    server.create_user(email, PASSWORD)
    _forgot(server, email)
    message = wait_outbox(server.data_dir, email, "reset_password")
    folder = server.data_dir / "outbox"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = [p for p, _ in outbox_messages(server.data_dir)]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert not list(folder.glob(".tmp-*"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AUTHGEAR, "outbox", *args, "--data-dir", str(server.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    listing = run("list")
    assert listing.returncode == 0, listing.stderr
    assert email in listing.stdout and "Reset your Authgear password" in listing.stdout
    shown = run("show", "latest")
    assert shown.returncode == 0, shown.stderr
    assert f"To: {email}" in shown.stdout
    assert code_of(message) in shown.stdout and link_of(message) in shown.stdout
    assert run("show", "1").stdout == shown.stdout
    raw = run("show", "latest", "--raw")
    assert "Content-Type: multipart/alternative" in raw.stdout
    missing = run("show", "99")
    assert missing.returncode == 1 and missing.stderr.startswith("authgear: no message 99")
    assert run("show", "x").returncode == 1


def test_mail_templates_are_overridden_from_the_data_folder(
    sqlite_server: ServerProcess,
) -> None:
    server = sqlite_server
    override = server.data_dir / "templates" / "mail"
    override.mkdir(parents=True)
    (override / "reset_password.txt").write_text(
        "Subject: Custom reset for {{ to }}\n\nYour code:\n\n    {{ code }}\n\n{{ link }}\n"
    )
    server.start()
    email = new_email()
    server.create_user(email, PASSWORD)
    _forgot(server, email)
    message = wait_outbox(server.data_dir, email, "reset_password")
    assert message["Subject"] == f"Custom reset for {email}"
    assert text_of(message).startswith("Your code:")
    # The HTML part was not overridden: the packaged one is still sent.
    assert "Reset your password" in html_of(message)


def test_an_address_that_would_be_two_recipients_in_a_header_gets_no_mail(
    sqlite_server: ServerProcess,
) -> None:
    """The sign-up form accepts "attacker,victim@example.com" (no spaces or control
    characters); in a To header it would be two recipients. No mail is composed for it."""
    server = sqlite_server
    server.config["log_level"] = "info"
    server.start()
    victim = new_email()
    pages = Pages(server.url)
    assert pages.signup(f"attacker,{victim}", PASSWORD).status_code == 303
    r = pages.post("/settings/account/verify", {}, page="/settings/account")
    assert r.status_code == 303
    pages.close()
    _wait_log(
        server, r"mail verify_email to a\*\*\*@example\.com dropped: it could not be composed"
    )
    assert outbox_messages(server.data_dir) == []
