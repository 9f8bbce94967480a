"""Signing keys: RSA-2048, kid a UUID, kept in the database; the JWKS serves every unretired key."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from authgear.server.storage import Repository, SigningKey


@dataclass(frozen=True, slots=True)
class LoadedKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    public_jwk: dict[str, Any]

    def __repr__(self) -> str:
        return f"LoadedKey(kid={self.kid!r})"


def generate_signing_key(now: int | None = None) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SigningKey(
        kid=str(uuid.uuid4()),
        private_pem=pem,
        created_at=int(time.time()) if now is None else now,
        active=True,
        retire_at=None,
    )


def _load(k: SigningKey) -> LoadedKey:
    private = serialization.load_pem_private_key(k.private_pem.encode(), password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError(f"signing key {k.kid} is not an RSA key")
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.pop("key_ops", None)
    jwk.update({"kid": k.kid, "use": "sig", "alg": "RS256"})
    return LoadedKey(k.kid, private, jwk)


class KeySet:
    """The keys in memory: the newest active one signs; all unretired ones verify."""

    def __init__(self, keys: list[SigningKey], now: int) -> None:
        usable = [k for k in keys if k.retire_at is None or k.retire_at > now]
        if not any(k.active for k in usable):
            raise ValueError("no active signing key")
        self._loaded = [_load(k) for k in usable]
        by_kid = {k.kid: k for k in usable}
        active = [lk for lk in self._loaded if by_kid[lk.kid].active]
        self.signing = max(active, key=lambda lk: by_kid[lk.kid].created_at)
        self.jwks: dict[str, Any] = {"keys": [lk.public_jwk for lk in self._loaded]}
        self.public_keys = {lk.kid: lk.private_key.public_key() for lk in self._loaded}


async def load_or_create_keys(repo: Repository) -> KeySet:
    now = int(time.time())
    keys = await repo.list_signing_keys()
    if not keys:
        await repo.add_signing_key(generate_signing_key(now))
        keys = await repo.list_signing_keys()
    return KeySet(keys, now)
