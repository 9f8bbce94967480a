"""Signing keys: RSA-2048, kid a UUID, kept in the database.

Rotation (`authgear keys rotate`) publishes a new key, which signs from its ``activate_at`` on,
after every process has reloaded its keys and serves it in the JWKS. The old keys keep being
served until ``retire_at``: after every token they signed has expired.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from authgear.server.storage import Repository, SigningKey
from authgear.server.tokens import ID_TOKEN_LIFETIME


@dataclass(frozen=True, slots=True)
class LoadedKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    public_jwk: dict[str, Any]

    def __repr__(self) -> str:
        return f"LoadedKey(kid={self.kid!r})"


def generate_signing_key(now: int | None = None, activate_at: int | None = None) -> SigningKey:
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
        activate_at=activate_at,
    )


def _load(k: SigningKey) -> LoadedKey:
    private = serialization.load_pem_private_key(k.private_pem.encode(), password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError(f"signing key {k.kid} is not an RSA key")
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.pop("key_ops", None)
    jwk.update({"kid": k.kid, "use": "sig", "alg": "RS256"})
    return LoadedKey(k.kid, private, jwk)


def _signs(k: SigningKey, now: int) -> bool:
    return k.active and (k.activate_at is None or k.activate_at <= now)


class KeySet:
    """The keys in memory: the newest key that may sign does; all unretired ones verify."""

    def __init__(self, keys: list[SigningKey], now: int, previous: KeySet | None = None) -> None:
        usable = [k for k in keys if k.retire_at is None or k.retire_at > now]
        candidates = [k for k in usable if _signs(k, now)]
        if not candidates:
            raise ValueError("no signing key is active")
        cache: dict[str, LoadedKey] = previous._by_kid if previous is not None else {}
        self._by_kid: dict[str, LoadedKey] = {k.kid: cache.get(k.kid) or _load(k) for k in usable}
        newest = max(candidates, key=lambda k: (k.activate_at or k.created_at, k.created_at))
        self.signing = self._by_kid[newest.kid]
        self.fingerprint = tuple(sorted((k.kid, k.kid == newest.kid) for k in usable))
        self.jwks: dict[str, Any] = {"keys": [lk.public_jwk for lk in self._by_kid.values()]}
        self.public_keys = {kid: lk.private_key.public_key() for kid, lk in self._by_kid.items()}


async def load_or_create_keys(repo: Repository) -> KeySet:
    now = int(time.time())
    keys = await repo.list_signing_keys()
    if not keys:
        await repo.add_signing_key(generate_signing_key(now))
        keys = await repo.list_signing_keys()
    return KeySet(keys, now)


async def reload_keys(repo: Repository, current: KeySet) -> KeySet:
    """The key set as the database has it now; the same object when nothing changed."""
    now = int(time.time())
    fresh = KeySet(await repo.list_signing_keys(), now, current)
    return current if fresh.fingerprint == current.fingerprint else fresh


def retirement_time(now: int, publish_delay: int, max_token_lifetime: int) -> int:
    """When a replaced key may leave the JWKS: once the last token it can sign has expired.

    Processes keep signing with the old key until the new one activates (``publish_delay``),
    and a token lives at most ``max_token_lifetime``; a minute of margin covers clock skew.
    """
    return now + publish_delay + max(max_token_lifetime, ID_TOKEN_LIFETIME) + 60


async def rotate(repo: Repository, *, publish_delay: int, max_token_lifetime: int) -> SigningKey:
    now = int(time.time())
    new = generate_signing_key(now, activate_at=now + publish_delay)
    await repo.rotate_signing_keys(new, retirement_time(now, publish_delay, max_token_lifetime))
    return new
