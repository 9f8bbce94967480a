"""Proof Key for Code Exchange (RFC 7636), ``S256`` only: ``plain`` is refused (RFC 9700
§2.1.1), and so is a verifier for a code issued without a challenge (a PKCE downgrade)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from authgear.server.http import OAuthError

# BASE64URL(SHA256(verifier)) without padding: always 43 characters (RFC 7636 §4.2).
CHALLENGE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
# 43 to 128 unreserved characters (RFC 7636 §4.1).
VERIFIER_RE = re.compile(r"^[-._~A-Za-z0-9]{43,128}$")


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def challenge_error(challenge: str | None, method: str | None, *, required: bool) -> str | None:
    """What is wrong with an authorization request's ``code_challenge`` and
    ``code_challenge_method`` (RFC 7636 §4.3, §4.4.1), or None when they are acceptable."""
    if challenge is None:
        if required:
            return "PKCE code challenge is required"
        if method is not None:
            return "code_challenge_method without code_challenge"
        return None
    if method != "S256":
        return "only code_challenge_method=S256 is supported"
    if not CHALLENGE_RE.match(challenge):
        return "malformed code_challenge"
    return None


def check_verifier(challenge: str | None, verifier: str | None, *, required: bool) -> None:
    """The token request's ``code_verifier`` against the code's challenge (RFC 7636 §4.6);
    ``required``: the client must use PKCE. Raises OAuthError."""
    if challenge is None:
        if verifier is not None:
            # PKCE downgrade: the code was issued without a challenge (RFC 9700 §2.1.1).
            raise OAuthError("invalid_grant", "code_verifier for a code issued without PKCE")
        if required:
            raise OAuthError("invalid_grant", "invalid authorization code")
        return
    if not verifier:
        raise OAuthError("invalid_request", "PKCE code verifier is required")
    if not VERIFIER_RE.match(verifier) or not hmac.compare_digest(s256(verifier), challenge):
        raise OAuthError("invalid_grant", "invalid PKCE code verifier")
