"""Second-factor secrets: TOTP (RFC 6238), recovery codes and trusted-device tokens, with
Authgear's parameters (accounts spec §2.3-2.5). Pure: no I/O, the clock is an argument.

TOTP: SHA1, 6 digits, 30 s steps, ±1 step of skew, a 20-byte secret in base32 without padding.
Beyond Authgear, a code is accepted only for a time step *after* the last accepted one, so a
code seen over a shoulder or in a log cannot be replayed in its 90-second window.

Recovery codes: 10 characters of Crockford base32 (50 bits), shown ``XXXXX-XXXXX``; input is
normalised like Authgear's (spaces and ``-`` dropped, upper-cased, I/L→1, O→0). Only a keyed
hash is stored (HMAC-SHA256 under a server secret, bound to the user), never the code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import quote, urlencode

import pyotp

TOTP_DIGITS = 6
TOTP_PERIOD = 30
TOTP_SKEW = 1
TOTP_SECRET_BYTES = 20
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RECOVERY_CODE_LENGTH = 10
DEVICE_TOKEN_LENGTH = 64
_NORMALISE = str.maketrans({"I": "1", "L": "1", "O": "0"})


def new_totp_secret() -> str:
    return base64.b32encode(secrets.token_bytes(TOTP_SECRET_BYTES)).decode("ascii").rstrip("=")


def totp_uri(secret: str, account: str, issuer: str) -> str:
    """Authgear's ``GetURI``: the label is the account name alone, the issuer only in the
    query, whose keys are sorted (Go's ``url.Values.Encode``)."""
    query = urlencode(
        {
            "algorithm": "SHA1",
            "digits": TOTP_DIGITS,
            "issuer": issuer,
            "period": TOTP_PERIOD,
            "secret": secret,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{quote(account, safe='')}?{query}"


def totp_code(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD).at(step * TOTP_PERIOD)


def totp_match(secret: str, code: str, now: float, after_step: int | None) -> int | None:
    """The time step whose code ``code`` is, within ±1 step of ``now`` and later than
    ``after_step`` (the last accepted one), or None. Every candidate is compared in constant
    time, whatever matches."""
    code = code.strip()
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return None
    current = int(now) // TOTP_PERIOD
    found: int | None = None
    for step in range(current - TOTP_SKEW, current + TOTP_SKEW + 1):
        ok = hmac.compare_digest(totp_code(secret, step).encode(), code.encode())
        if ok and (after_step is None or step > after_step):
            found = step
    return found


def new_recovery_codes(count: int) -> list[str]:
    return [
        "".join(secrets.choice(CROCKFORD) for _ in range(RECOVERY_CODE_LENGTH))
        for _ in range(count)
    ]


def format_recovery_code(code: str) -> str:
    return f"{code[:5]}-{code[5:]}"


def normalise_recovery_code(value: str) -> str | None:
    """Authgear's input normalisation; None when the result is not a possible code."""
    if len(value) > 64:
        return None
    code = value.replace(" ", "").replace("-", "").upper().translate(_NORMALISE)
    if len(code) != RECOVERY_CODE_LENGTH or any(c not in CROCKFORD for c in code):
        return None
    return code


def recovery_code_hash(key: bytes, user_id: str, code: str) -> str:
    return hmac.new(key, f"recovery:{user_id}:{code}".encode(), hashlib.sha256).hexdigest()


def new_device_token() -> str:
    return "".join(secrets.choice(CROCKFORD) for _ in range(DEVICE_TOKEN_LENGTH))


def device_token_hash(token: str) -> str | None:
    """SHA-256 of a well-formed device token (320 random bits need no key), else None."""
    if len(token) != DEVICE_TOKEN_LENGTH or any(c not in CROCKFORD for c in token):
        return None
    return hashlib.sha256(token.encode("ascii")).hexdigest()
