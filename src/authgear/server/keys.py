"""Signing keys: RSA-2048, kid a UUID, kept in the database.

Rotation (`authgear keys rotate`) publishes a new key, which signs from its ``activate_at`` on,
after every process has reloaded its keys and serves it in the JWKS. The old keys keep being
served until ``retire_at``: after every token they signed has expired.

At rest, the signing keys' private halves and the refresh-token key are encrypted under a
key-encryption key (KEK) from the config, a file or the environment, when one is set
(:class:`KeyCipher`): a database dump alone then signs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwt.algorithms import RSAAlgorithm

from authgear.server.config import ServerConfig, kek_bytes
from authgear.server.security.sealing import totp_purpose
from authgear.server.storage import Repository, SigningKey
from authgear.server.tokens import ID_TOKEN_LIFETIME

# The one algorithm the server signs with (tokens, JWKS, discovery, ID token hints).
ALGORITHM = "RS256"
ENCRYPTED_PREFIX = "enc:v1:"
ROTATION_KEY = "refresh_rotation_key"
CSRF_KEY = "csrf_key"
MFA_KEY = "mfa_hash_key"
EMAIL_CODE_KEY = "email_code_key"
# Server secrets kept in the database (hex), encrypted under the KEK like the signing keys:
# the key deriving rotated refresh tokens, the CSRF token key, and the HMAC keys of stored
# recovery codes and of emailed codes and links.
SERVER_SECRETS = (ROTATION_KEY, CSRF_KEY, MFA_KEY, EMAIL_CODE_KEY)


class KeyEncryptionError(Exception):
    """Stored key material cannot be read with the configured key-encryption keys; the
    message is one line that says what to configure."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class KeyCipher:
    """AES-256-GCM under the KEK. A stored value is ``enc:v1:<kek id>:<nonce+ciphertext>``,
    bound to its row (``purpose``, as associated data) so a value cannot be moved to another
    row; a value without the prefix is plaintext from before a KEK was configured."""

    def __init__(self, current: bytes | None = None, old: Sequence[bytes] = ()) -> None:
        self.current = current
        self._keys = {self.key_id(k): k for k in (*old, *([current] if current else []))}

    @classmethod
    def from_config(cls, config: ServerConfig) -> KeyCipher:
        current = kek_bytes(config.key_encryption_key) if config.key_encryption_key else None
        return cls(current, [kek_bytes(k) for k in config.old_key_encryption_keys])

    @staticmethod
    def key_id(kek: bytes) -> str:
        """Names a KEK in stored values without revealing anything about it."""
        return hashlib.sha256(b"authgear kek id\x00" + kek).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"KeyCipher(current={self.key_id(self.current) if self.current else None})"

    def encrypt(self, plaintext: str, purpose: str) -> str:
        if self.current is None:
            return plaintext
        nonce = os.urandom(12)
        sealed = AESGCM(self.current).encrypt(nonce, plaintext.encode(), purpose.encode())
        return f"{ENCRYPTED_PREFIX}{self.key_id(self.current)}:{_b64(nonce + sealed)}"

    def decrypt(self, stored: str, purpose: str) -> str:
        if not stored.startswith(ENCRYPTED_PREFIX):
            return stored
        kid, _, body = stored[len(ENCRYPTED_PREFIX) :].partition(":")
        kek = self._keys.get(kid)
        if kek is None:
            raise KeyEncryptionError(
                f"{purpose} is encrypted with key-encryption key {kid}, which is not configured: "
                "set key_encryption_key (or key_encryption_key_file, AUTHGEAR_KEY_ENCRYPTION_KEY"
                "), and during a rotation old_key_encryption_key_files"
            )
        raw = _unb64(body)
        try:
            return AESGCM(kek).decrypt(raw[:12], raw[12:], purpose.encode()).decode()
        except (InvalidTag, ValueError):
            raise KeyEncryptionError(
                f"{purpose} does not decrypt: the stored value is damaged"
            ) from None

    def is_current(self, stored: str) -> bool:
        """Stored as it would be written now (encrypted under the current KEK, or plaintext
        when there is none)."""
        if self.current is None:
            return not stored.startswith(ENCRYPTED_PREFIX)
        return stored.startswith(f"{ENCRYPTED_PREFIX}{self.key_id(self.current)}:")


PLAINTEXT = KeyCipher()


def _key_purpose(kid: str) -> str:
    return f"signing key {kid}"


@dataclass(frozen=True, slots=True)
class LoadedKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    public_jwk: dict[str, Any]

    def __repr__(self) -> str:
        return f"LoadedKey(kid={self.kid!r})"


def generate_signing_key(
    now: int | None = None, activate_at: int | None = None, cipher: KeyCipher = PLAINTEXT
) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    kid = str(uuid.uuid4())
    return SigningKey(
        kid=kid,
        private_pem=cipher.encrypt(pem, _key_purpose(kid)),
        created_at=int(time.time()) if now is None else now,
        active=True,
        retire_at=None,
        activate_at=activate_at,
    )


def _load(k: SigningKey, cipher: KeyCipher) -> LoadedKey:
    pem = cipher.decrypt(k.private_pem, _key_purpose(k.kid))
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError(f"signing key {k.kid} is not an RSA key")
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.pop("key_ops", None)
    jwk.update({"kid": k.kid, "use": "sig", "alg": ALGORITHM})
    return LoadedKey(k.kid, private, jwk)


def _signs(k: SigningKey, now: int) -> bool:
    return k.active and (k.activate_at is None or k.activate_at <= now)


class KeySet:
    """The keys in memory: the newest key that may sign does; all unretired ones verify."""

    def __init__(
        self,
        keys: list[SigningKey],
        now: int,
        previous: KeySet | None = None,
        cipher: KeyCipher = PLAINTEXT,
    ) -> None:
        usable = [k for k in keys if k.retire_at is None or k.retire_at > now]
        candidates = [k for k in usable if _signs(k, now)]
        if not candidates:
            raise ValueError("no signing key is active")
        self.cipher = cipher
        cache: dict[str, LoadedKey] = previous._by_kid if previous is not None else {}
        self._by_kid: dict[str, LoadedKey] = {
            k.kid: cache.get(k.kid) or _load(k, cipher) for k in usable
        }
        newest = max(candidates, key=lambda k: (k.activate_at or k.created_at, k.created_at))
        self.signing = self._by_kid[newest.kid]
        self.fingerprint = tuple(sorted((k.kid, k.kid == newest.kid) for k in usable))
        self.jwks: dict[str, Any] = {"keys": [lk.public_jwk for lk in self._by_kid.values()]}
        self.public_keys = {kid: lk.private_key.public_key() for kid, lk in self._by_kid.items()}

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        """A JWT of ``claims`` signed by the current signing key, with its ``kid`` and ``typ``
        (``at+jwt`` for access tokens, RFC 9068; ``JWT`` for ID tokens)."""
        key = self.signing
        return jwt.encode(
            claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": typ}
        )


async def load_or_create_keys(repo: Repository, cipher: KeyCipher = PLAINTEXT) -> KeySet:
    now = int(time.time())
    keys = await repo.list_signing_keys()
    if not keys:
        await repo.add_signing_key(generate_signing_key(now, cipher=cipher))
        keys = await repo.list_signing_keys()
    return KeySet(keys, now, cipher=cipher)


async def reload_keys(repo: Repository, current: KeySet) -> KeySet:
    """The key set as the database has it now; the same object when nothing changed."""
    now = int(time.time())
    fresh = KeySet(await repo.list_signing_keys(), now, current, current.cipher)
    return current if fresh.fingerprint == current.fingerprint else fresh


async def load_server_secret(repo: Repository, name: str, cipher: KeyCipher = PLAINTEXT) -> bytes:
    """The 32-byte server secret ``name`` (one of :data:`SERVER_SECRETS`), created by the first
    process, stored under the KEK."""
    fresh = cipher.encrypt(secrets.token_hex(32), name)
    stored = await repo.get_or_create_secret(name, fresh, int(time.time()))
    return bytes.fromhex(cipher.decrypt(stored, name))


async def reencrypt(repo: Repository, cipher: KeyCipher) -> int:
    """Store every key under the current KEK: plaintext rows from before a KEK was set, rows
    under an old KEK after a rotation, and the sealed TOTP secrets (else an old KEK could not be
    dropped without locking users out of their second factor). Safe with several processes at
    once (each row is replaced only if unchanged). Returns how many rows this call changed."""
    changed = 0
    totp = repo.authenticators
    for authenticator_id, sealed in await totp.sealed_totp_secrets():
        if not cipher.is_current(sealed):
            purpose = totp_purpose(authenticator_id)
            new = cipher.encrypt(cipher.decrypt(sealed, purpose), purpose)
            changed += await totp.replace_totp_secret(authenticator_id, sealed, new)
    for k in await repo.list_signing_keys():
        if not cipher.is_current(k.private_pem):
            purpose = _key_purpose(k.kid)
            new = cipher.encrypt(cipher.decrypt(k.private_pem, purpose), purpose)
            changed += await repo.replace_signing_key_pem(k.kid, k.private_pem, new)
    for name in SERVER_SECRETS:
        stored = await repo.get_or_create_secret(
            name, cipher.encrypt(secrets.token_hex(32), name), int(time.time())
        )
        if not cipher.is_current(stored):
            new = cipher.encrypt(cipher.decrypt(stored, name), name)
            changed += await repo.replace_secret(name, stored, new)
    return changed


def new_key_encryption_key() -> str:
    """32 random bytes in base64: a KEK for key_encryption_key."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def retirement_time(now: int, publish_delay: int, max_token_lifetime: int) -> int:
    """When a replaced key may leave the JWKS: once the last token it can sign has expired.

    Processes keep signing with the old key until the new one activates (``publish_delay``),
    and a token lives at most ``max_token_lifetime``; a minute of margin covers clock skew.
    """
    return now + publish_delay + max(max_token_lifetime, ID_TOKEN_LIFETIME) + 60


async def rotate(
    repo: Repository,
    *,
    publish_delay: int,
    max_token_lifetime: int,
    cipher: KeyCipher = PLAINTEXT,
) -> SigningKey:
    now = int(time.time())
    if cipher.current is None:
        for k in await repo.list_signing_keys():
            # Refuse to add a plaintext key next to encrypted ones: the KEK is missing here.
            cipher.decrypt(k.private_pem, _key_purpose(k.kid))
    new = generate_signing_key(now, activate_at=now + publish_delay, cipher=cipher)
    await repo.rotate_signing_keys(new, retirement_time(now, publish_delay, max_token_lifetime))
    return new
