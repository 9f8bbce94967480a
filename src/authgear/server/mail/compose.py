"""Messages from templates: ``templates/mail/<kind>.txt`` (first line ``Subject: ...``, a blank
line, then the plain-text body) and optionally ``<kind>.html``. A folder ``templates/mail/``
in the data folder overrides any of them, file by file."""

from __future__ import annotations

import email.utils
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "mail"
KINDS = ("verify_email", "reset_password", "change_email", "password_changed", "email_changed")


class MailTemplates:
    def __init__(self, override: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if override is not None:
            loaders.append(jinja2.FileSystemLoader(str(override)))
        loaders.append(jinja2.FileSystemLoader(str(PACKAGE_TEMPLATES)))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, kind: str, context: dict[str, Any]) -> tuple[str, str, str | None]:
        """(subject, text, html or None). Raises jinja2.TemplateError for a broken template."""
        text = self.env.get_template(f"{kind}.txt").render(context)
        first, _, body = text.partition("\n")
        if not first.startswith("Subject:"):
            raise jinja2.TemplateError(f"{kind}.txt must start with a 'Subject:' line")
        # One line, whatever the template or its values hold (no header injection).
        subject = " ".join(first[len("Subject:") :].split())
        try:
            html = self.env.get_template(f"{kind}.html").render(context)
        except jinja2.TemplateNotFound:
            html = None
        return subject, body.lstrip("\n"), html


def default_sender(app_name: str, issuer_host: str | None) -> str:
    host = issuer_host or "localhost"
    # An IP literal or a name without a dot is no mail domain.
    if "." not in host or host.replace(".", "").isdigit() or ":" in host:
        host = "localhost"
    name = " ".join(app_name.split()) or "Authgear"
    return str(Address(display_name=name, addr_spec=f"no-reply@{host}"))


def build_message(
    *, sender: str, to: str, subject: str, text: str, html: str | None, kind: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    # One RFC 5322 address, or nothing: an address the sign-up form let through but that is no
    # addr-spec ("a,b@x.com" would be two recipients in a To header) is refused here.
    try:
        message["To"] = Address(addr_spec=to)
    except Exception as e:
        raise ValueError("not a deliverable address") from e
    if len(message["To"].addresses) != 1:
        raise ValueError("not a deliverable address")
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    _, sender_addr = email.utils.parseaddr(sender)
    domain = sender_addr.rpartition("@")[2] or "localhost"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    # RFC 3834: an automatic message; vacation responders should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Authgear-Message"] = kind
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message
