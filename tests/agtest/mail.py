"""A real SMTP server (aiosmtpd) on a free loopback port that keeps what it receives, a TLS
certificate for it, and readers for mail: from that server or from a data folder's outbox/."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CODE_RE = re.compile(r"^\s+(\d{6})\s*$", re.MULTILINE)
LINK_RE = re.compile(r"(https?://\S+\?code=[0-9A-Z]{32})")


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


@dataclass
class SMTPSink:
    """Messages received, in order; ``reject`` answers every DATA with that reply instead
    (e.g. "451 4.3.0 try again later"), keeping what it was sent in ``refused``."""

    port: int
    tls: ssl.SSLContext | None = None
    implicit_tls: bool = False
    require_starttls: bool = False
    credentials: tuple[str, str] | None = None
    reject: str | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    refused: list[bytes] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reject:
            with self._cond:
                self.refused.append(bytes(envelope.content))
                self._cond.notify_all()
            return self.reject
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert isinstance(message, EmailMessage)
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()
        return "250 OK"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            self.credentials is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == self.credentials
        )
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok)

    def start(self) -> SMTPSink:
        kwargs: dict[str, Any] = {}
        if self.implicit_tls:
            kwargs["ssl_context"] = self.tls
            kwargs["server_hostname"] = "127.0.0.1"
        elif self.tls is not None:
            kwargs["tls_context"] = self.tls
            kwargs["require_starttls"] = self.require_starttls
        if self.credentials is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = self.tls is not None
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait(
        self, to: str, kind: str | None = None, *, count: int = 1, timeout: float = 60
    ) -> EmailMessage:
        """The ``count``-th message to ``to`` (of ``kind``: X-Authgear-Message), waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self.messages if _matches(m, to, kind)]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no mail {kind or ''} to {to} within {timeout}s")
                self._cond.wait(left)

    def wait_refused(self, count: int = 1, timeout: float = 60) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.refused) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fewer than {count} refused deliveries in {timeout}s")
                self._cond.wait(left)
            return list(self.refused)

    def to(self, address: str, kind: str | None = None) -> list[EmailMessage]:
        with self._cond:
            return [m for m in self.messages if _matches(m, address, kind)]


def _matches(message: EmailMessage, to: str, kind: str | None) -> bool:
    if str(message.get("To", "")).lower() != to.lower():
        return False
    return kind is None or message.get("X-Authgear-Message") == kind


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "no text/plain part"
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, "no text/html part"
    return str(part.get_content())


def code_of(message: EmailMessage) -> str:
    m = CODE_RE.search(text_of(message))
    assert m, f"no code in: {text_of(message)!r}"
    return m.group(1)


def link_of(message: EmailMessage) -> str:
    m = LINK_RE.search(text_of(message))
    assert m, f"no link in: {text_of(message)!r}"
    return m.group(1)


def outbox_messages(data_dir: Path) -> list[tuple[Path, EmailMessage]]:
    folder = data_dir / "outbox"
    if not folder.exists():
        return []
    out = []
    for path in sorted(folder.glob("[0-9]*.eml")):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        out.append((path, message))
    return out


def wait_outbox(
    data_dir: Path, to: str, kind: str | None = None, *, count: int = 1, timeout: float = 60
) -> EmailMessage:
    """The ``count``-th message to ``to`` in the outbox, waiting for the server to write it."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for _, m in outbox_messages(data_dir) if _matches(m, to, kind)]
        if len(found) >= count:
            return found[count - 1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no mail {kind or ''} to {to} in the outbox within {timeout}s")
        time.sleep(0.05)


def outbox_to(data_dir: Path, to: str, kind: str | None = None) -> list[EmailMessage]:
    return [m for _, m in outbox_messages(data_dir) if _matches(m, to, kind)]
