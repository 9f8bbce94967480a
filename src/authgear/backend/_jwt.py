"""Local verification of Authgear's JWT access tokens against the server's JWKS.

A token is checked in this order, and the first failure is the answer (``InvalidToken``):
shape (three base64url segments, at most 8 KiB) → header (JSON object, ``alg`` in the allowlist,
``typ`` ``at+jwt``, ``kid``, no ``crit``) → key (by ``kid`` from the cached JWKS; its type and
``alg`` must fit) → signature → claims (``iss``, ``aud``, ``exp``/``nbf``/``iat`` with a leeway,
``sub``). Header parameters naming other keys (``jku``, ``x5u``, ``jwk``) are never used.

The JWKS cache: keys are parsed once into ``cryptography`` public key objects. They are
refetched when older than ``jwks_ttl`` (the stale keys keep serving while and if that fails)
and when a token names an unknown ``kid``, but never more often than once per
``refetch_cooldown`` seconds, whatever the traffic: a flood of made-up ``kid`` values costs
the server at most one JWKS request per cooldown. Concurrent callers share one fetch.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import httpx2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from authgear.backend._types import (
    CLAIM_CAN_REAUTHENTICATE,
    CLAIM_IS_ANONYMOUS,
    CLAIM_IS_VERIFIED,
    CLAIM_ROLES,
    MAX_AUTHORIZATION_LENGTH,
    AuthenticatedUser,
    BackendUnavailable,
    ConfigurationError,
    InvalidToken,
    RequestLike,
    bearer_token,
)

log = logging.getLogger("authgear.backend")

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_DOCUMENT = 1 << 20  # discovery and JWKS documents larger than 1 MiB are refused

# Hash and padding objects hold no state: built once, shared by every verification.
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
_PKCS1V15 = padding.PKCS1v15()
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _b64decode(segment: str) -> bytes:
    # The token already matched _TOKEN_RE (base64url alphabet, no padding).
    data = segment.replace("-", "+").replace("_", "/") + "=" * (-len(segment) % 4)
    return binascii.a2b_base64(data, strict_mode=True)


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    key: PublicKey
    alg: str | None  # the JWK's "alg", when it names one

    def verify(self, alg: str, signature: bytes, signing_input: bytes) -> None:
        """Raise InvalidToken unless ``signature`` is this key's over ``signing_input``."""
        if self.alg is not None and self.alg != alg:
            raise InvalidToken("the key does not allow this algorithm")
        digest = _HASHES[alg[2:]]
        try:
            if alg[0] == "R" and isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(signature, signing_input, _PKCS1V15, digest)
            elif alg[0] == "P" and isinstance(self.key, rsa.RSAPublicKey):
                pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
                self.key.verify(signature, signing_input, pss, digest)
            elif alg[0] == "E" and isinstance(self.key, ec.EllipticCurvePublicKey):
                if not isinstance(self.key.curve, _CURVES[alg]):
                    raise InvalidToken("the key does not allow this algorithm")
                size = (self.key.curve.key_size + 7) // 8
                if len(signature) != 2 * size:
                    raise InvalidToken("signature verification failed")
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                self.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
            else:
                raise InvalidToken("the key does not allow this algorithm")
        except InvalidSignature:
            raise InvalidToken("signature verification failed") from None


def parse_jwks(document: Any) -> dict[str, _Key]:
    """The usable signing keys of a JWKS document, by ``kid``; others are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, _Key] = {}
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
        if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            keys[kid] = _Key(kid, key, alg)
    return keys


class _KeyCache:
    """The JWKS in memory and the rules for refetching it (no I/O here)."""

    def __init__(self, ttl: float, cooldown: float, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.cooldown = cooldown
        self.clock = clock
        self.keys: dict[str, _Key] = {}
        self.loaded_at = -math.inf
        self.attempted_at = -math.inf
        self.fetching = False
        self.cond = threading.Condition(threading.Lock())
        self.fetches = 0  # for tests and diagnostics
        self.generation = 0  # bumped whenever a key leaves (or changes in) the set
        self.last_error: str | None = None
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

    def finish(self, keys: dict[str, _Key] | None, error: str | None) -> None:
        self.fetching = False
        if keys:
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
            self.loaded_at = self.clock()
            self.last_error = None
        else:
            self.last_error = error or "the JWKS has no usable signing key"
            log.warning("JWKS fetch failed, keeping %d known keys: %s", len(self.keys), error)
        self.cond.notify_all()

    def missing(self, kid: str) -> InvalidToken | BackendUnavailable:
        if not self.keys:
            return BackendUnavailable(f"no signing keys: {self.last_error or 'not fetched'}")
        return InvalidToken("unknown signing key")


def _document(response: httpx2.Response, what: str) -> Any:
    if response.status_code != 200:
        raise ValueError(f"{what}: HTTP {response.status_code}")
    if len(response.content) > _MAX_DOCUMENT:
        raise ValueError(f"{what}: larger than 1 MiB")
    return json.loads(response.content)


class JWTVerifier:
    """Verify Authgear access tokens locally (no call to Authgear per request).

    ``endpoint`` is the Authgear origin the SDK uses; discovery gives the ``jwks_uri`` and the
    issuer (which must equal ``endpoint`` unless ``issuer`` says otherwise, e.g. when the
    backend reaches Authgear by an internal address). ``audience`` defaults to the issuer,
    which is what Authgear puts in ``aud``. A revoked session's tokens verify until they
    expire; use :class:`ResolverClient` where revocation must take effect at once.

    ``verify``/``authenticate`` are synchronous; ``verify_async``/``authenticate_async`` never
    block the event loop on I/O (signature checks are CPU work of tens of microseconds, done
    inline). One instance serves any number of threads and event loops.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        audience: str | Iterable[str] | None = None,
        issuer: str | None = None,
        jwks_uri: str | None = None,
        algorithms: Iterable[str] = ("RS256",),
        leeway: float = 10.0,
        require_at_jwt: bool = True,
        jwks_ttl: float = 600.0,
        refetch_cooldown: float = 5.0,
        cache_size: int = 4096,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        http_client: httpx2.Client | None = None,
    ) -> None:
        if endpoint is None and (issuer is None or jwks_uri is None):
            raise ConfigurationError("give endpoint, or both issuer and jwks_uri")
        self.algorithms = frozenset(algorithms)
        bad = self.algorithms - SUPPORTED_ALGORITHMS
        if bad or not self.algorithms:
            raise ConfigurationError(
                f"unsupported algorithms {sorted(bad)}: only asymmetric ones "
                f"({', '.join(sorted(SUPPORTED_ALGORITHMS))}); never none or HMAC"
            )
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._issuer = issuer.rstrip("/") if issuer else None
        self._jwks_uri = jwks_uri
        if isinstance(audience, str):
            audience = (audience,)
        self._audience = frozenset(audience) if audience is not None else None
        self.leeway = leeway
        self.require_at_jwt = require_at_jwt
        self.timeout = timeout
        self._clock = clock
        self._cache = _KeyCache(jwks_ttl, refetch_cooldown, clock)
        self._cache.on_change = self.clear_cache
        # Verified tokens: the exact token string → (user, exp). A hit skips the signature
        # and claim checks, which passed for these very bytes; only exp is checked again.
        self.cache_size = cache_size
        self._verified: dict[str, tuple[AuthenticatedUser, float]] = {}
        self._verified_lock = threading.Lock()
        self._http = http_client
        self._own_http = http_client is None
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._async_locks = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"JWTVerifier(endpoint={self.endpoint!r}, issuer={self._issuer!r})"

    # --- public API ----------------------------------------------------------------------

    @property
    def issuer(self) -> str | None:
        """The expected ``iss`` (known after the first fetch when taken from discovery)."""
        return self._issuer

    @property
    def jwks_fetches(self) -> int:
        """How many JWKS fetches this verifier has started."""
        return self._cache.fetches

    def verify(self, token: str) -> AuthenticatedUser:
        """The user behind an access token; :class:`InvalidToken` when it is not acceptable,
        :class:`BackendUnavailable` when no signing key could be loaded yet."""
        hit = self._verified.get(token)
        if hit is not None and self._fresh(hit[1]):
            return hit[0]
        parsed = self._parse(token)
        generation = self._cache.generation
        key = self._key_sync(parsed.kid)
        return self._finish(token, parsed, key, generation)

    async def verify_async(self, token: str) -> AuthenticatedUser:
        hit = self._verified.get(token)
        if hit is not None and self._fresh(hit[1]):
            return hit[0]
        parsed = self._parse(token)
        generation = self._cache.generation
        key = await self._key_async(parsed.kid)
        return self._finish(token, parsed, key, generation)

    def _fresh(self, exp: float) -> bool:
        """A cached verification still holds: not expired, and the JWKS is within its TTL
        (past it, the full path runs and refreshes the keys, which may drop this token's)."""
        now = self._clock()
        cache = self._cache
        return now - self.leeway < exp and now - cache.loaded_at < cache.ttl

    def clear_cache(self) -> None:
        """Forget verified tokens (done by itself whenever the JWKS changes)."""
        with self._verified_lock:
            self._verified = {}

    def authenticate(self, request: RequestLike) -> AuthenticatedUser:
        return self.verify(bearer_token(request.header("authorization")))

    async def authenticate_async(self, request: RequestLike) -> AuthenticatedUser:
        return await self.verify_async(bearer_token(request.header("authorization")))

    def prefetch(self) -> None:
        """Load discovery and the JWKS now (e.g. at startup) instead of on the first token."""
        with self._cache.cond:
            if self._cache.fetching or not self._cache.stale(self._clock()):
                return
            self._cache.claim(self._clock())
        self._fetch_sync()

    def close(self) -> None:
        if self._own_http and self._http is not None:
            self._http.close()
            self._http = None

    # --- parsing and checks -----------------------------------------------------------------

    def _parse(self, token: str) -> _Parsed:
        if not isinstance(token, str) or len(token) > MAX_AUTHORIZATION_LENGTH:
            raise InvalidToken("malformed token")
        if not _TOKEN_RE.fullmatch(token):
            raise InvalidToken("malformed token")
        head, body, sig = token.split(".")
        try:
            header = json.loads(_b64decode(head))
            signature = _b64decode(sig)
        except (ValueError, binascii.Error, RecursionError):  # RecursionError: deep nesting
            raise InvalidToken("malformed token") from None
        if not isinstance(header, dict):
            raise InvalidToken("malformed token")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken("algorithm not allowed")
        if "crit" in header:
            raise InvalidToken("unsupported critical header parameters")
        if self.require_at_jwt:
            typ = header.get("typ")
            if not isinstance(typ, str) or typ.lower().removeprefix("application/") != "at+jwt":
                raise InvalidToken("not an access token (typ is not at+jwt)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise InvalidToken("the token names no signing key")
        return _Parsed(alg, kid, body, signature, token[: len(head) + 1 + len(body)].encode())

    def _finish(self, token: str, parsed: _Parsed, key: _Key, generation: int) -> AuthenticatedUser:
        key.verify(parsed.alg, parsed.signature, parsed.signing_input)
        try:
            claims = json.loads(_b64decode(parsed.body))
        except (ValueError, binascii.Error, RecursionError):
            raise InvalidToken("malformed token") from None
        if not isinstance(claims, dict):
            raise InvalidToken("malformed token")
        self._check_claims(claims)
        user = user_from_claims(claims)
        if self.cache_size > 0:
            self._remember(token, user, claims["exp"], generation)
        return user

    def _remember(self, token: str, user: AuthenticatedUser, exp: float, generation: int) -> None:
        with self._verified_lock:
            if generation != self._cache.generation:
                # The JWKS changed while this token was being verified (its key may be gone):
                # remembering it now would outlive the clear_cache() that change did.
                return
            verified = self._verified
            if len(verified) >= self.cache_size:
                now = self._clock() - self.leeway
                for t in [t for t, (_, e) in verified.items() if e <= now]:
                    del verified[t]
                while len(verified) >= self.cache_size:  # still full: drop the oldest
                    del verified[next(iter(verified))]
            verified[token] = (user, exp)

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        issuer = self._issuer
        if claims.get("iss") != issuer or issuer is None:
            raise InvalidToken("wrong issuer")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud
        audience = self._audience if self._audience is not None else frozenset((issuer,))
        if not isinstance(auds, list) or not any(
            isinstance(a, str) and a in audience for a in auds
        ):
            raise InvalidToken("wrong audience")
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not _number(exp) or not _number(iat):
            raise InvalidToken("exp and iat are required")
        if now - self.leeway >= exp:
            raise InvalidToken("the access token expired")
        if now + self.leeway < iat:
            raise InvalidToken("the access token is not valid yet")
        if nbf is not None and (not _number(nbf) or now + self.leeway < nbf):
            raise InvalidToken("the access token is not valid yet")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("the access token has no subject")

    # --- keys --------------------------------------------------------------------------------

    def _key_sync(self, kid: str) -> _Key:
        cache = self._cache
        with cache.cond:
            now = self._clock()
            key = cache.keys.get(kid)
            if key is not None:
                if not (cache.stale(now) and cache.may_fetch(now)):
                    return key
                cache.claim(now)  # refresh in this thread; others keep using the stale key
            else:
                while cache.fetching:  # share the fetch in flight
                    cache.cond.wait(self.timeout * 3)
                key = cache.keys.get(kid)
                if key is not None:
                    return key
                if not cache.may_fetch(self._clock()):
                    raise cache.missing(kid)
                cache.claim(self._clock())
        self._fetch_sync()
        key = cache.keys.get(kid)
        if key is None:
            raise cache.missing(kid)
        return key

    async def _key_async(self, kid: str) -> _Key:
        cache = self._cache
        key = cache.keys.get(kid)
        if key is not None:
            with cache.cond:
                now = self._clock()
                if not (cache.stale(now) and cache.may_fetch(now)):
                    return key
                cache.claim(now)
            await self._fetch_async()
            key = cache.keys.get(kid)  # gone when the refreshed JWKS no longer has it
            if key is None:
                raise cache.missing(kid)
            return key
        # Unknown kid: tasks of this loop queue here, then see the fetch's result or the
        # cooldown; a fetch in flight in another thread or loop counts as the cooldown.
        async with self._async_lock():
            key = cache.keys.get(kid)
            if key is not None:
                return key
            with cache.cond:
                if not cache.may_fetch(self._clock()):
                    raise cache.missing(kid)
                cache.claim(self._clock())
            await self._fetch_async()
        key = cache.keys.get(kid)
        if key is None:
            raise cache.missing(kid)
        return key

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._async_locks.get(loop)
        if lock is None:
            lock = self._async_locks[loop] = asyncio.Lock()
        return lock

    def _discovery_url(self) -> str:
        return f"{self.endpoint}/.well-known/openid-configuration"

    def _apply_discovery(self, document: Any) -> None:
        if not isinstance(document, dict):
            raise ValueError("discovery: not a JSON object")
        issuer, jwks_uri = document.get("issuer"), document.get("jwks_uri")
        if not isinstance(issuer, str) or not isinstance(jwks_uri, str):
            raise ValueError("discovery: no issuer or jwks_uri")
        if self._issuer is None:
            if issuer.rstrip("/") != self.endpoint:
                raise ConfigurationError(
                    f"discovery says the issuer is {issuer!r}, not the endpoint "
                    f"{self.endpoint!r}: pass issuer= if that is expected"
                )
            self._issuer = issuer.rstrip("/")
        if self._jwks_uri is None:
            self._jwks_uri = jwks_uri

    def _fetch_sync(self) -> None:
        """Fetch (discovery and) the JWKS; the caller has claimed the fetch."""
        keys: dict[str, _Key] | None = None
        error: str | None = None
        try:
            if self._http is None:
                self._http = httpx2.Client(timeout=self.timeout)
            if self._jwks_uri is None or self._issuer is None:
                self._apply_discovery(_document(self._http.get(self._discovery_url()), "discovery"))
            assert self._jwks_uri is not None
            keys = parse_jwks(_document(self._http.get(self._jwks_uri), "JWKS"))
        except ConfigurationError as e:
            error = str(e)
            log.error("%s", e)
        except Exception as e:  # network, HTTP status, JSON: keep serving the keys we have
            error = f"{type(e).__name__}: {e}"
        finally:
            with self._cache.cond:
                self._cache.finish(keys, error)

    async def _fetch_async(self) -> None:
        keys: dict[str, _Key] | None = None
        error: str | None = None
        try:
            # JWKS fetches are rare: a short-lived client is not tied to any one event loop.
            async with httpx2.AsyncClient(timeout=self.timeout) as http:
                if self._jwks_uri is None or self._issuer is None:
                    r = await http.get(self._discovery_url())
                    self._apply_discovery(_document(r, "discovery"))
                assert self._jwks_uri is not None
                keys = parse_jwks(_document(await http.get(self._jwks_uri), "JWKS"))
        except ConfigurationError as e:
            error = str(e)
            log.error("%s", e)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            with self._cache.cond:
                self._cache.finish(keys, error)


@dataclass(frozen=True, slots=True)
class _Parsed:
    alg: str
    kid: str
    body: str
    signature: bytes
    signing_input: bytes


def _bool_claim(claims: Mapping[str, Any], name: str) -> bool:
    return claims.get(name) is True


def user_from_claims(claims: Mapping[str, Any]) -> AuthenticatedUser:
    """Map verified access-token claims to an :class:`AuthenticatedUser`."""
    roles = claims.get(CLAIM_ROLES)
    scope = claims.get("scope")
    client_id = claims.get("client_id")
    auth_time = claims.get("auth_time")
    exp = claims.get("exp")
    return AuthenticatedUser(
        sub=str(claims["sub"]),
        roles=tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else (),
        is_verified=_bool_claim(claims, CLAIM_IS_VERIFIED),
        is_anonymous=_bool_claim(claims, CLAIM_IS_ANONYMOUS),
        can_reauthenticate=_bool_claim(claims, CLAIM_CAN_REAUTHENTICATE),
        client_id=client_id if isinstance(client_id, str) else None,
        scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
        authenticated_at=int(auth_time) if _number(auth_time) else None,
        expires_at=int(exp) if _number(exp) else None,
        source="jwt",
        claims=claims,
    )
