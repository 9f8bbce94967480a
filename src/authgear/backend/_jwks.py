"""The signing keys a :class:`~authgear.backend.JWTVerifier` trusts: the JWKS document parsed
into ``cryptography`` key objects (weak ones refused), the in-memory cache and its refetch rules,
and the capped, https-only download of discovery and JWKS documents."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from authgear.backend._errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    InvalidToken,
)

log = logging.getLogger("authgear.backend")

#: Discovery and JWKS documents larger than this are refused, and not downloaded past it.
MAX_DOCUMENT = 1 << 20
#: RSA keys shorter than this are refused (NIST SP 800-131A; RFC 7518 §3.3 requires 2048).
MIN_RSA_BITS = 2048
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)

# Hash and padding objects hold no state: built once, shared by every verification.
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
_PKCS1V15 = padding.PKCS1v15()
# The NIST curves of RFC 7518 §3.4, P-256 and up; anything else (secp256k1, ...) is refused.
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
_ALLOWED_CURVES = tuple(_CURVES.values())

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


@dataclass(frozen=True, slots=True)
class Key:
    kid: str
    key: PublicKey
    alg: str | None  # the JWK's "alg", when it names one
    #: The token algorithms this key may verify: its JWK's "alg", or every one its type and
    #: curve allow. Worked out once, so a verification needs no isinstance() against the
    #: key's ABC (measured: five ABC checks per token were a tenth of our own cost).
    allowed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, kid: str, key: PublicKey, alg: str | None) -> Key:
        if isinstance(key, rsa.RSAPublicKey):
            allowed = _RSA_ALGORITHMS
        else:
            allowed = frozenset(a for a, curve in _CURVES.items() if isinstance(key.curve, curve))
        if alg is not None:
            allowed = allowed & {alg}
        return cls(kid, key, alg, allowed)

    def verify(self, alg: str, signature: bytes, signing_input: bytes) -> None:
        """Raise InvalidToken unless ``signature`` is this key's over ``signing_input``."""
        if alg not in self.allowed:
            raise InvalidToken("the key does not allow this algorithm")
        digest = _HASHES[alg[2:]]
        key: Any = self.key  # its type is what `allowed` says
        try:
            if alg[0] == "R":
                key.verify(signature, signing_input, _PKCS1V15, digest)
            elif alg[0] == "P":
                pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
                key.verify(signature, signing_input, pss, digest)
            else:
                size = (key.curve.key_size + 7) // 8
                if len(signature) != 2 * size:
                    raise InvalidToken("signature verification failed")
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
        except InvalidSignature:
            raise InvalidToken("signature verification failed") from None


def _weakness(key: PublicKey) -> str | None:
    """Why ``key`` must not be trusted, or None."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"an RSA key of {key.key_size} bits (at least {MIN_RSA_BITS} are required)"
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, _ALLOWED_CURVES):
        return f"an EC key on {key.curve.name} (P-256, P-384 or P-521 are required)"
    return None


def parse_jwks(document: Any, refused: dict[str, str] | None = None) -> dict[str, Key]:
    """The usable signing keys of a JWKS document, by ``kid``; others are skipped. Weak keys
    (RSA under 2048 bits, curves other than P-256/384/521) are logged and, when ``refused`` is
    given, recorded there (kid → reason)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, Key] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid, kty, use, alg = jwk.get("kid"), jwk.get("kty"), jwk.get("use"), jwk.get("alg")
        if not isinstance(kid, str) or not kid or (use is not None and use != "sig"):
            continue
        if alg is not None and alg not in SUPPORTED_ALGORITHMS:
            continue
        public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            if kty == "RSA":
                key: Any = RSAAlgorithm.from_jwk(public)
            elif kty == "EC":
                key = ECAlgorithm.from_jwk(public)
            else:
                continue
        except Exception:  # a malformed entry must not hide the good ones
            log.warning("skipping a JWKS key that does not parse (kid %r)", kid[:64])
            continue
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            continue
        weakness = _weakness(key)
        if weakness is not None:
            log.warning("refusing JWKS key %r: %s", kid[:64], weakness)
            if refused is not None:
                refused[kid] = weakness
            continue
        keys[kid] = Key.of(kid, key, alg)
    return keys


# --- fetching --------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str, allow_insecure_http: bool) -> str:
    """``url`` if keys may be fetched from it: https, or http to a loopback host (or anywhere
    with ``allow_insecure_http``); a ConfigurationError otherwise. Over plain http anyone on
    the path could serve their own keys and sign any token they like."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigurationError(f"{what} {url!r} is not a URL") from None
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname:
        if allow_insecure_http or is_loopback(parts.hostname):
            return url
        raise ConfigurationError(
            f"{what} {url!r} is plain http to a host that is not this machine: use https, "
            "or pass allow_insecure_http=True if the network path is trusted"
        )
    raise ConfigurationError(f"{what} {url!r} must be an absolute https URL")


def _too_large(what: str) -> ValueError:
    return ValueError(f"{what}: larger than {MAX_DOCUMENT} bytes")


def _declared_length(response: httpx2.Response, what: str) -> None:
    if response.status_code != 200:
        raise ValueError(f"{what}: HTTP {response.status_code}")
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_DOCUMENT:
        raise _too_large(what)  # refused before a byte of the body is read


def get_document(http: httpx2.Client, url: str, what: str) -> Any:
    """GET a JSON document, reading at most MAX_DOCUMENT bytes of it (streamed)."""
    with http.stream("GET", url) as response:
        _declared_length(response, what)
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT:
                raise _too_large(what)
    return json.loads(bytes(body))


async def get_document_async(http: httpx2.AsyncClient, url: str, what: str) -> Any:
    async with http.stream("GET", url) as response:
        _declared_length(response, what)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT:
                raise _too_large(what)
    return json.loads(bytes(body))


# --- the cache -------------------------------------------------------------------------------


class KeyCache:
    """The JWKS in memory and the rules for refetching it (no I/O here).

    Also the one place that logs the JWKS's health: once when it becomes unreachable, once when
    it is back, once per configuration error; never per request."""

    def __init__(self, ttl: float, cooldown: float, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.cooldown = cooldown
        self.clock = clock
        self.keys: dict[str, Key] = {}
        self.refused: dict[str, str] = {}  # weak keys the JWKS offered: kid → reason
        self.loaded_at = -math.inf
        self.attempted_at = -math.inf
        self.fetching = False
        self.cond = threading.Condition(threading.Lock())
        self.fetches = 0  # for tests and diagnostics
        self.generation = 0  # bumped whenever a key leaves (or changes in) the set
        self.last_error: str | None = None
        self.config_error: ConfigurationError | None = None
        self.failing = False
        self.on_change: Callable[[], None] = lambda: None

    # All below run with self.cond held.
    def may_fetch(self, now: float) -> bool:
        return not self.fetching and now - self.attempted_at >= self.cooldown

    def stale(self, now: float) -> bool:
        return now - self.loaded_at >= self.ttl

    def claim(self, now: float) -> None:
        self.fetching = True
        self.attempted_at = now
        self.fetches += 1

    def finish(
        self,
        keys: dict[str, Key] | None,
        error: str | None,
        refused: dict[str, str] | None = None,
        config_error: ConfigurationError | None = None,
    ) -> None:
        self.fetching = False
        self._log_config_error(config_error)
        self.config_error = config_error
        if keys:
            self._replace(keys, refused or {})
        else:
            if refused:
                self.refused = refused
            self.last_error = error or "the JWKS has no usable signing key"
            if not self.failing and config_error is None:
                self.failing = True
                log.warning(
                    "cannot load the JWKS (%s); keeping %d known keys, retrying at most every "
                    "%g s (logged once until it is back)",
                    self.last_error,
                    len(self.keys),
                    self.cooldown,
                )
        self.cond.notify_all()

    def _replace(self, keys: dict[str, Key], refused: dict[str, str]) -> None:
        dropped = any(
            k not in keys or keys[k].key.public_numbers() != old.key.public_numbers()
            for k, old in self.keys.items()
        )
        if dropped:
            # Before on_change: a verification begun with a dropped key is not remembered.
            self.generation += 1
        if dropped or set(keys) != set(self.keys):
            self.on_change()
        self.keys = keys
        self.refused = refused
        self.loaded_at = self.clock()
        self.last_error = None
        if self.failing:
            self.failing = False
            log.warning("the JWKS is reachable again (%d keys)", len(keys))

    def _log_config_error(self, error: ConfigurationError | None) -> None:
        previous = self.config_error
        if error is not None and (previous is None or str(previous) != str(error)):
            log.error("%s", error)
        elif error is None and previous is not None:
            log.warning("the configuration error is gone: %s no longer applies", previous)

    def missing(self, kid: str) -> BackendError:
        """What to raise for a token whose ``kid`` has no usable key."""
        if self.config_error is not None:
            return self.config_error
        reason = self.refused.get(kid)
        if reason is not None:
            return InvalidToken(f"the signing key is too weak: {reason}")
        if not self.keys:
            return BackendUnavailable(f"no signing keys: {self.last_error or 'not fetched'}")
        return InvalidToken("unknown signing key")
