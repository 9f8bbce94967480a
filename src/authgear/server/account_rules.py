"""Small rules about accounts shared by the pages, the admin API and the CLI."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# No whitespace and no control characters (an email is shown in pages, logs and terminals).
_PART = r"[^@\s\x00-\x1f\x7f-\x9f]"
EMAIL_RE = re.compile(rf"^{_PART}{{1,64}}@{_PART}+\.{_PART}+$|^{_PART}{{1,64}}@localhost$")


def safe_next(value: str | None) -> str | None:
    """Where to go after signing in without an OAuth flow (``/login?next=/portal``): a path
    on this server only, never another origin (``//host``, ``/\\host``, ``https:``)."""
    if not value or len(value) > 1000 or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value


def normalize_email(value: str) -> str | None:
    email = value.strip()
    if len(email) > 320 or not EMAIL_RE.match(email):
        return None
    return email
