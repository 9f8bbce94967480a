"""Where a message goes: an SMTP server (``smtp_url``), or the data folder's outbox.

Both implement :class:`Mailer`. SMTP uses the standard library's ``smtplib`` in a worker thread:
mail is sent by the background queue (mail/queue.py), never on a request, so a blocking client is
simple and enough. A failure raises :class:`MailError` whose message is safe to log: the SMTP
reply code and the exception type, never the message, its code or link, nor the password.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import smtplib
import ssl
import tempfile
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import anyio.to_thread

OUTBOX = "outbox"
SCHEMES = {"smtp": 25, "smtps": 465, "smtp+starttls": 587}
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


class MailError(Exception):
    """Sending failed. ``permanent``: retrying will not help (refused recipient, bad login)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Deliver one message or raise MailError."""
        ...


@dataclass(frozen=True, slots=True)
class SMTPSettings:
    host: str
    port: int
    # "tls": TLS from the first byte (smtps); "starttls": upgrade after EHLO; "none".
    security: str
    username: str | None
    password: str | None = field(repr=False)
    timeout: float = 20.0
    # A CA bundle to trust instead of the system's (a private relay's own CA).
    ca_file: str | None = None


def parse_smtp_url(url: str) -> SMTPSettings:
    """``smtp://[user[:password]@]host[:port][?starttls=true&timeout=20&ca_file=...]``,
    ``smtps://`` (TLS, port 465) or ``smtp+starttls://`` (port 587). Raises ValueError with a
    message that never repeats the URL (it may hold a password)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("smtp_url is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError("smtp_url must start with smtp://, smtps:// or smtp+starttls://")
    if not parts.hostname:
        raise ValueError("smtp_url needs a host")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError("smtp_url has no path or fragment")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - {"starttls", "timeout", "ca_file"}
    if unknown:
        raise ValueError(f"smtp_url: unknown option {sorted(unknown)[0]!r}")
    security = {"smtps": "tls", "smtp+starttls": "starttls"}.get(scheme, "none")
    starttls = query.get("starttls", "").lower()
    if starttls in TRUE:
        if security == "tls":
            raise ValueError("smtp_url: smtps:// is TLS already; starttls does not apply")
        security = "starttls"
    elif starttls and starttls not in FALSE:
        raise ValueError("smtp_url: starttls must be true or false")
    try:
        timeout = float(query.get("timeout", "20"))
    except ValueError:
        raise ValueError("smtp_url: timeout must be a number of seconds") from None
    if not 0 < timeout <= 300:
        raise ValueError("smtp_url: timeout must be between 0 and 300 seconds")
    return SMTPSettings(
        host=parts.hostname,
        port=port or SCHEMES[scheme],
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        timeout=timeout,
        ca_file=query.get("ca_file") or None,
    )


class SMTPMailer:
    def __init__(self, settings: SMTPSettings, local_hostname: str | None = None) -> None:
        self.settings = settings
        self.local_hostname = local_hostname

    def __repr__(self) -> str:
        s = self.settings
        return f"SMTPMailer({s.host}:{s.port}, {s.security})"

    async def send(self, message: EmailMessage) -> None:
        await anyio.to_thread.run_sync(self._send, message)

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)

    def _send(self, message: EmailMessage) -> None:
        s = self.settings
        try:
            client: smtplib.SMTP
            if s.security == "tls":
                client = smtplib.SMTP_SSL(
                    s.host,
                    s.port,
                    timeout=s.timeout,
                    context=self._context(),
                    local_hostname=self.local_hostname,
                )
            else:
                client = smtplib.SMTP(
                    s.host, s.port, timeout=s.timeout, local_hostname=self.local_hostname
                )
            with client:
                if s.security == "starttls":
                    client.starttls(context=self._context())
                if s.username is not None:
                    client.login(s.username, s.password or "")
                client.send_message(message)
        except smtplib.SMTPAuthenticationError as e:
            raise MailError(f"SMTP login refused ({e.smtp_code})", permanent=True) from None
        except smtplib.SMTPRecipientsRefused as e:
            replies = sorted({code for code, _ in e.recipients.values()})
            permanent = all(500 <= code < 600 for code in replies)
            raise MailError(f"recipient refused ({replies})", permanent=permanent) from None
        except smtplib.SMTPResponseException as e:
            raise MailError(
                f"SMTP server answered {e.smtp_code}", permanent=500 <= e.smtp_code < 600
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise MailError(
                "the SMTP server does not offer STARTTLS or AUTH", permanent=True
            ) from None
        except ssl.SSLError as e:
            raise MailError(f"TLS failed ({type(e).__name__})") from None
        except (smtplib.SMTPException, OSError) as e:
            raise MailError(type(e).__name__) from None


class OutboxMailer:
    """Each message as an ``.eml`` file in ``<data dir>/outbox/`` (folder 0700, files 0600):
    the embedded default, so every flow works without an SMTP server. Files are numbered;
    a number is claimed by hard-linking a finished temp file to it, which fails if another
    process took it first, so concurrent writers never overwrite or half-write a message."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __repr__(self) -> str:
        return f"OutboxMailer({self.folder})"

    async def send(self, message: EmailMessage) -> None:
        try:
            await anyio.to_thread.run_sync(self.write, message)
        except OSError as e:
            raise MailError(f"cannot write to the outbox ({type(e).__name__})") from None

    def write(self, message: EmailMessage) -> Path:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        data = bytes(message)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".eml")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            number = next_number(self.folder)
            while True:
                target = self.folder / f"{number:06d}-{stamp}.eml"
                try:
                    os.link(tmp, target)
                    return target
                except FileExistsError:
                    number += 1
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def message_files(folder: Path) -> list[tuple[int, Path]]:
    """The outbox's messages by number, oldest first."""
    out: list[tuple[int, Path]] = []
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        head, sep, _ = path.name.partition("-")
        if sep and path.suffix == ".eml" and head.isdigit():
            out.append((int(head), path))
    return sorted(out)


def next_number(folder: Path) -> int:
    files = message_files(folder)
    return files[-1][0] + 1 if files else 1
