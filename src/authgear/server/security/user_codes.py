"""User codes of the device authorization grant (RFC 8628 §6.1): what a person reads on one
screen and types on another.

Eight characters of ``BCDFGHJKLMNPQRSTVWXZ`` (20 consonants: no vowels, so no words, and no
digits or letters that pass for one another), shown as ``XXXX-XXXX``: 20^8 ≈ 2^34.5 codes,
which with the limits in device_flow.py is RFC 8628's suggested strength. Typed input is
normalised: case, dashes and spaces do not matter; anything else never matches.

Stored as HMAC-SHA256 under a server key: a plain hash of 34.5 bits is reversed by trying every
code, so a leaked table would give the codes of pending sign-ins.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
LENGTH = 8
# What a person may type around the characters: ignored.
SEPARATORS = frozenset(" -\t")
# A typed value longer than this is not a code (checked before any work).
MAX_INPUT = 64


def new_user_code() -> str:
    """A new code, without its dash (see :func:`display`)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def display(code: str) -> str:
    """``BCDFGHJK`` as ``BCDF-GHJK``."""
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


def normalize(typed: str | None) -> str | None:
    """What a person typed as a code (``bcdf ghjk``, ``BCDF-GHJK``): upper case without
    separators; None unless exactly LENGTH characters of the alphabet. ASCII is checked before
    upper-casing: ``str.upper`` maps some non-ASCII letters to ASCII ones (``ß`` to ``SS``)."""
    if typed is None or len(typed) > MAX_INPUT or not typed.isascii():
        return None
    cleaned = "".join(c for c in typed if c not in SEPARATORS).upper()
    if len(cleaned) != LENGTH or any(c not in ALPHABET for c in cleaned):
        return None
    return cleaned


def user_code_hash(key: bytes, code: str) -> str:
    """The stored form of a normalised code."""
    return hmac.new(key, f"device-user-code\x00{code}".encode(), hashlib.sha256).hexdigest()


def derive_key(server_key: bytes) -> bytes:
    """The user-code key, derived from a server secret with its own label, so it is unrelated
    to any other use of that secret (HMAC as a PRF)."""
    return hmac.new(server_key, b"authgear device user codes v1", hashlib.sha256).digest()
