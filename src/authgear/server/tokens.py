"""Token minting and hashing. Only SHA-256 hashes of secrets are stored. Signing is the key
set's (:meth:`authgear.server.keys.KeySet.sign`)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

CLAIM_IS_ANONYMOUS = "https://authgear.com/claims/user/is_anonymous"
CLAIM_IS_VERIFIED = "https://authgear.com/claims/user/is_verified"
CLAIM_CAN_REAUTHENTICATE = "https://authgear.com/claims/user/can_reauthenticate"
CLAIM_ROLES = "https://authgear.com/claims/user/roles"

# The claim (Auth0's convention) and value that mark a client_credentials access token.
CLAIM_GRANT_TYPE = "gty"
CLIENT_CREDENTIALS_GTY = "client-credentials"

ID_TOKEN_LIFETIME = 300


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_id() -> str:
    return str(uuid.uuid4())


def split_compound(token: str) -> tuple[str, str] | None:
    """``<id>.<secret>`` → (id, secret), or None when malformed."""
    ident, sep, secret = token.partition(".")
    if not sep or not ident or not secret or len(token) > 512:
        return None
    return ident, secret


def user_claims(
    *, is_anonymous: bool, is_verified: bool, can_reauthenticate: bool, roles: list[str]
) -> dict[str, Any]:
    return {
        CLAIM_IS_ANONYMOUS: is_anonymous,
        CLAIM_IS_VERIFIED: is_verified,
        CLAIM_CAN_REAUTHENTICATE: can_reauthenticate,
        CLAIM_ROLES: roles,
    }
