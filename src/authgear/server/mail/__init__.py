"""Outgoing mail: a :class:`Mailer` (SMTP or the outbox folder), templates, and the queue that
sends off the request path. :class:`MailService` puts them together from the settings."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authgear.server.config import Settings
from authgear.server.mail.compose import MailTemplates, build_message, default_sender
from authgear.server.mail.queue import MailQueue, mask
from authgear.server.mail.transport import (
    OUTBOX,
    Mailer,
    MailError,
    OutboxMailer,
    SMTPMailer,
    parse_smtp_url,
)

__all__ = ["OUTBOX", "MailError", "MailService", "Mailer", "mailer_for", "mask"]

# Overrides of templates/mail/<kind>.txt|html, under the data folder.
TEMPLATE_OVERRIDES = Path("templates") / "mail"


def mailer_for(settings: Settings) -> Mailer:
    config = settings.config
    if config.smtp_url:
        host = urlsplit(config.issuer).hostname
        return SMTPMailer(parse_smtp_url(config.smtp_url), local_hostname=host)
    return OutboxMailer(settings.data_dir / OUTBOX)


class MailService:
    """What endpoints call: ``submit(kind, to, **context)``; never waits, never raises."""

    def __init__(self, settings: Settings, mailer: Mailer | None = None) -> None:
        config = settings.config
        self.mailer = mailer or mailer_for(settings)
        override = settings.data_dir / TEMPLATE_OVERRIDES
        self.templates = MailTemplates(override if override.is_dir() else None)
        self.sender = config.email_from or default_sender(
            config.app_name, urlsplit(config.issuer).hostname
        )
        self.base = {"app_name": config.app_name, "issuer": config.issuer}
        self.queue = MailQueue(
            self.mailer,
            self._compose,
            attempts=config.mail_send_attempts,
            retry_delay=config.mail_retry_delay,
        )

    def _compose(self, kind: str, to: str, context: dict[str, Any]) -> EmailMessage:
        subject, text, html = self.templates.render(kind, {**self.base, **context, "to": to})
        return build_message(
            sender=self.sender, to=to, subject=subject, text=text, html=html, kind=kind
        )

    def submit(self, kind: str, to: str, **context: Any) -> bool:
        return self.queue.submit(kind, to, context)

    async def aclose(self, grace: float = 10.0) -> None:
        await self.queue.aclose(grace)
