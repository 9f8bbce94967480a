"""Sealing secrets the server must read back (TOTP secrets): ``seal(plaintext, purpose)`` and
``open(stored, purpose)``, the interface of the key-encryption facility for signing keys
(AES-GCM under an operator's key-encryption key, the purpose as associated data so a sealed
value cannot be moved to another row).

Where no key-encryption key is configured the value is stored as it is: a TOTP secret cannot be
hashed (the server computes codes from it), and an encryption key kept in the same database
would protect nothing. The server wires its key-encryption cipher in here when it has one
(``ServerState.sealer``); values stored before that stay readable (no prefix = plaintext).
"""

from __future__ import annotations

from typing import Protocol


class Sealer(Protocol):
    def encrypt(self, plaintext: str, purpose: str) -> str: ...
    def decrypt(self, stored: str, purpose: str) -> str: ...


class Unsealed:
    """No key-encryption key: values are stored as given."""

    def encrypt(self, plaintext: str, purpose: str) -> str:
        return plaintext

    def decrypt(self, stored: str, purpose: str) -> str:
        return stored


UNSEALED = Unsealed()


def totp_purpose(authenticator_id: str) -> str:
    """What a sealed TOTP secret is bound to (the associated data: a sealed secret cannot be
    moved to another authenticator's row)."""
    return f"totp secret {authenticator_id}"
