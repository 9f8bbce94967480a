"""Emailed one-time codes and links (verification, password reset, change of email).

Like Authgear (pkg/util/secretcode): a code is 6 digits, a link token 32 characters of Crockford
base32 (160 bits). Only keyed hashes are stored: HMAC-SHA256 with a server key over the purpose,
the subject and the value, so a leaked table gives neither a code (a plain hash of 6 digits is
reversed by trying a million) nor a usable link, and a code for one address or purpose cannot
match another's row. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

# The purposes are the stored rows' values, named where the rows are kept.
from authgear.server.storage.accounts import PURPOSE_CHANGE_EMAIL as PURPOSE_CHANGE_EMAIL
from authgear.server.storage.accounts import PURPOSE_RESET as PURPOSE_RESET
from authgear.server.storage.accounts import PURPOSE_VERIFY as PURPOSE_VERIFY

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_DIGITS = 6
LINK_CHARS = 32

PURPOSES = frozenset({PURPOSE_VERIFY, PURPOSE_RESET, PURPOSE_CHANGE_EMAIL})


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def new_link_token() -> str:
    return "".join(secrets.choice(CROCKFORD) for _ in range(LINK_CHARS))


def normalize_code(value: str) -> str | None:
    """What a person typed, as a code: spaces and dashes dropped; None unless 6 ASCII digits."""
    cleaned = value.replace(" ", "").replace("-", "").strip()
    if len(cleaned) != CODE_DIGITS or not (cleaned.isascii() and cleaned.isdigit()):
        return None
    return cleaned


def normalize_link_token(value: str) -> str | None:
    cleaned = value.strip().upper()
    if len(cleaned) != LINK_CHARS or any(c not in CROCKFORD for c in cleaned):
        return None
    return cleaned


def code_hash(key: bytes, purpose: str, subject: str, code: str) -> str:
    """The stored form of a code for (purpose, subject)."""
    message = f"code\x00{purpose}\x00{subject}\x00{code}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def link_hash(key: bytes, purpose: str, token: str) -> str:
    """The stored form of a link token; looked up directly (the token is the whole secret)."""
    message = f"link\x00{purpose}\x00{token}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
