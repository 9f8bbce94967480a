"""Local verification of Authgear's JWT access tokens (RFC 9068) against the server's JWKS.

A token is checked in this order, and the first failure is the answer (``InvalidToken``):
shape (three base64url segments, at most 8 KiB) → header (JSON object, ``alg`` in the allowlist,
``typ`` ``at+jwt``, ``kid``, no ``crit``) → key (by ``kid`` from the cached JWKS; its type and
``alg`` must fit; RSA under 2048 bits and curves below P-256 are never loaded) → signature →
claims (``iss``, ``aud``, ``exp``/``nbf``/``iat`` with a leeway, the optional ``max_token_age``,
``sub``) → who: a user, or a client's own token (``gty: client-credentials``), which only a
verifier built with ``allow_clients=True`` hands out, as an :class:`AuthenticatedClient`.
Header parameters naming other keys (``jku``, ``x5u``, ``jwk``) are never used.

The JWKS cache (``_jwks.py``): keys are parsed once into ``cryptography`` key objects, refetched
when older than ``jwks_ttl`` (the stale keys keep serving while and if that fails) and when a
token names an unknown ``kid``, but never more often than once per ``refetch_cooldown``
seconds, whatever the traffic. Concurrent callers share one fetch.

The hot path is written for speed (measured in benchmarks/bench_backend.py, steps recorded in
docs/benchmarks.md): a verified token is remembered by its exact string; a header segment seen
with a good signature is remembered parsed (Authgear signs every token of a key with the same
header), so a new token costs one base64 + JSON decode (the claims) and the RSA verify.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

import httpx2

from authgear.backend._errors import ConfigurationError, InvalidToken
from authgear.backend._jwks import (
    SUPPORTED_ALGORITHMS,
    Key,
    KeyCache,
    check_url,
    get_document,
    get_document_async,
    parse_jwks,
)
from authgear.backend._request import MAX_AUTHORIZATION_LENGTH, RequestLike, bearer_token
from authgear.backend._revocations import (
    RevocationFeed,
    RevocationPoller,
    RevokedSessions,
    feed_url,
)
from authgear.backend._types import (
    CLAIM_CAN_REAUTHENTICATE,
    CLAIM_GRANT_TYPE,
    CLAIM_IS_ANONYMOUS,
    CLAIM_IS_VERIFIED,
    CLAIM_ROLES,
    CLIENT_CREDENTIALS,
    AuthenticatedClient,
    AuthenticatedUser,
    Principal,
    as_user,
    new_user,
)

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "JWTVerifier",
    "parse_jwks",
    "principal_from_claims",
    "user_from_claims",
]

log = logging.getLogger("authgear.backend")

_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]+")
_decode_json = json.JSONDecoder().decode  # json.loads minus its type dispatch


def _loads_stdlib(data: bytes) -> Any:
    return _decode_json(data.decode())


_loads_json: Callable[[bytes], Any] = _loads_stdlib
try:
    # The `speedups` extra: orjson parses a token's claims in a fifth of json's time, which
    # is a tenth of a whole cold verification (measured, docs/benchmarks.md). Both raise
    # ValueError subclasses for what is not JSON.
    from orjson import loads as _orjson_loads

    _loads_json = _orjson_loads
except ImportError:  # pragma: no cover - the dev extra installs orjson
    pass


_HEADER_CACHE_SIZE = 64
#: "Bearer " as clients write it (RFC 6750 §2.1; the scheme is case-insensitive): for the
#: cache lookup before the Authorization header is parsed.
_BEARER = frozenset({"Bearer ", "bearer ", "BEARER "})
_isfinite = math.isfinite
_getpid = os.getpid


def _not_b64url(segment: str) -> bool:
    """True unless ``segment`` can be base64url without padding: not empty, none of the three
    characters of plain base64 that _b64decode would let through. (Anything else outside the
    alphabet, non-ASCII included, is refused by the strict decoder.)"""
    return not segment or "+" in segment or "/" in segment or "=" in segment


def _b64decode(segment: str) -> bytes:
    # Base64url without padding (checked by _not_b64url or _SEGMENT_RE first). Two replaces
    # and the strict C decoder measured faster than str.translate or urlsafe_b64decode.
    data = segment.replace("-", "+").replace("_", "/") + "=" * (-len(segment) % 4)
    return binascii.a2b_base64(data, strict_mode=True)


def _any_in(values: list[Any], wanted: frozenset[str]) -> bool:
    """Whether a list (of anything, from a token) holds one of ``wanted``."""
    try:
        return not wanted.isdisjoint(values)
    except TypeError:  # an unhashable element (a list, an object): not a string we want
        return any(type(v) is str and v in wanted for v in values)


def _number(value: Any) -> TypeGuard[int | float]:
    # `type() is`: a bool is not a timestamp.
    t = type(value)
    return t is int or (t is float and _isfinite(value))


def _check_options(
    endpoint: str | None,
    issuer: str | None,
    jwks_uri: str | None,
    algorithms: Iterable[str],
    max_token_age: float | None,
    allow_insecure_http: bool,
) -> frozenset[str]:
    """A verifier's options, checked when it is made (ConfigurationError); the algorithms."""
    if endpoint is None and (issuer is None or jwks_uri is None):
        raise ConfigurationError("give endpoint, or both issuer and jwks_uri")
    allowed = frozenset(algorithms)
    bad = allowed - SUPPORTED_ALGORITHMS
    if bad or not allowed:
        raise ConfigurationError(
            f"unsupported algorithms {sorted(bad)}: only asymmetric ones "
            f"({', '.join(sorted(SUPPORTED_ALGORITHMS))}); never none or HMAC"
        )
    if max_token_age is not None and not max_token_age > 0:
        raise ConfigurationError("max_token_age must be a positive number of seconds")
    if endpoint is not None:
        check_url(endpoint, "endpoint", allow_insecure_http)
    if jwks_uri is not None:
        check_url(jwks_uri, "jwks_uri", allow_insecure_http)
    return allowed


class JWTVerifier:
    """Verify Authgear access tokens locally (no call to Authgear per request).

    ``endpoint`` is the Authgear origin the SDK uses; discovery gives the ``jwks_uri`` and the
    issuer (which must equal ``endpoint`` unless ``issuer`` says otherwise, e.g. when the
    backend reaches Authgear by an internal address; a mismatch is a
    :class:`ConfigurationError`, answered 500 and logged once, not a 503). ``audience``
    defaults to the issuer, which is what Authgear puts in ``aud``. A revoked session's tokens
    verify until they expire, unless ``revocations`` (a :class:`RevocationFeed`) is given: then
    a daemon thread polls the server's revocation feed and tokens of sessions it lists are
    refused (:class:`InvalidToken`) within about ``poll_interval`` seconds of the revocation;
    use :class:`ResolverClient` where revocation must take effect at once.

    Keys are only fetched over https, or plain http to a loopback host
    (``allow_insecure_http=True`` lifts that, for a network path you trust). ``max_token_age``
    (seconds, off by default) refuses tokens whose lifetime (``exp - iat``) is longer, so no
    token is accepted longer than that after it was issued, whatever ``exp`` it claims.
    ``allow_clients=True`` accepts client_credentials tokens as :class:`AuthenticatedClient`
    from :meth:`verify_principal` and ``authenticate``; :meth:`verify` only returns users.

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
        max_token_age: float | None = None,
        require_at_jwt: bool = True,
        allow_clients: bool = False,
        allow_insecure_http: bool = False,
        jwks_ttl: float = 600.0,
        refetch_cooldown: float = 5.0,
        cache_size: int = 4096,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        http_client: httpx2.Client | None = None,
        revocations: RevocationFeed | None = None,
    ) -> None:
        self.algorithms = _check_options(
            endpoint, issuer, jwks_uri, algorithms, max_token_age, allow_insecure_http
        )
        self.allow_insecure_http = allow_insecure_http
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self._issuer = issuer.rstrip("/") if issuer else None
        self._jwks_uri = jwks_uri
        audience = (audience,) if isinstance(audience, str) else audience
        self._audience = frozenset(audience) if audience is not None else None
        self._issuer_set = frozenset((self._issuer,)) if self._issuer else frozenset()
        self.leeway = leeway
        self.max_token_age = max_token_age
        self.require_at_jwt = require_at_jwt
        self.allow_clients = allow_clients
        self.timeout = timeout
        self._clock = clock
        self._init_caches(jwks_ttl, refetch_cooldown, cache_size, clock)
        self._http = http_client
        self._own_http = http_client is None
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._async_locks = weakref.WeakKeyDictionary()
        self._start_feed(revocations, leeway, timeout, clock)

    def _init_caches(
        self,
        jwks_ttl: float,
        refetch_cooldown: float,
        cache_size: int,
        clock: Callable[[], float],
    ) -> None:
        self._cache = KeyCache(jwks_ttl, refetch_cooldown, clock)
        self._cache.on_change = self._keys_changed
        # Verified tokens: the exact token string → (principal, valid until). A hit skips the
        # signature and claim checks, which passed for these very bytes; only the time is
        # checked again.
        self.cache_size = cache_size
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._verified_lock = threading.Lock()
        # Header segments that came with a good signature → (alg, kid).
        self._headers: dict[str, tuple[str, str]] = {}

    def _start_feed(
        self,
        revocations: RevocationFeed | None,
        leeway: float,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        # The revocation feed (off: an empty set, and one falsy check on the cold path).
        self._revoked = RevokedSessions(leeway)
        self._poller: RevocationPoller | None = None
        if revocations is not None:
            url = feed_url(revocations, self.endpoint, self.allow_insecure_http)
            self._poller = RevocationPoller(
                revocations, url, self._revoked, self, timeout=timeout, clock=clock
            )
            self._poller.ensure_running()

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
        """The user behind an access token; :class:`InvalidToken` when it is not acceptable
        (a client's token included), :class:`BackendUnavailable` when no signing key could be
        loaded yet, :class:`ConfigurationError` when the verifier's settings do not fit the
        server (e.g. the issuer)."""
        return as_user(self.verify_principal(token))

    def verify_principal(self, token: str) -> Principal:
        """Like :meth:`verify`, but a client's token gives an :class:`AuthenticatedClient`
        when the verifier allows clients."""
        hit = self._verified.get(token)
        if hit is not None and self._fresh(hit[1]):
            principal = hit[0]
        else:
            alg, kid, head, body, sig = self._parse(token)
            generation = self._cache.generation
            key = self._key_sync(kid)
            principal = self._finish(token, alg, kid, head, body, sig, key, generation)
        if not self.allow_clients and type(principal) is AuthenticatedClient:
            raise InvalidToken("a client's token (client_credentials) is not accepted here")
        return principal

    async def verify_async(self, token: str) -> AuthenticatedUser:
        return as_user(await self.verify_principal_async(token))

    async def verify_principal_async(self, token: str) -> Principal:
        hit = self._verified.get(token)
        if hit is not None and self._fresh(hit[1]):
            principal = hit[0]
        else:
            alg, kid, head, body, sig = self._parse(token)
            generation = self._cache.generation
            key = await self._key_async(kid)
            principal = self._finish(token, alg, kid, head, body, sig, key, generation)
        if not self.allow_clients and type(principal) is AuthenticatedClient:
            raise InvalidToken("a client's token (client_credentials) is not accepted here")
        return principal

    def authenticate(self, request: RequestLike) -> Principal:
        return self.verify_principal(bearer_token(request.header("authorization")))

    async def authenticate_async(self, request: RequestLike) -> Principal:
        return await self.verify_principal_async(bearer_token(request.header("authorization")))

    def authenticate_nowait(self, request: RequestLike) -> Principal | None:
        """:meth:`authenticate` when it needs no I/O (the key is known and fresh, as for all
        but a handful of requests), else None: the ASGI middleware then awaits
        :meth:`authenticate_async`. Saves two coroutines per request on the hot path."""
        authorization = request.header("authorization")
        if authorization is not None and len(authorization) <= MAX_AUTHORIZATION_LENGTH:
            # A token verified before is well-formed: look it up before parsing the header.
            hit = self._verified.get(authorization[7:])
            if hit is not None and authorization[:7] in _BEARER:
                now, cache = self._clock(), self._cache
                if now - self.leeway < hit[1] and now - cache.loaded_at < cache.ttl:
                    principal = hit[0]
                    if self.allow_clients or type(principal) is not AuthenticatedClient:
                        return principal
        return self._nowait_slow(bearer_token(authorization))

    def _nowait_slow(self, token: str) -> Principal | None:
        hit = self._verified.get(token)
        if hit is not None and self._fresh(hit[1]):
            return self.verify_principal(token)  # e.g. "bearer" spelled otherwise
        alg, kid, head, body, sig = self._parse(token)
        cache = self._cache
        key = cache.keys.get(kid)
        if key is None or self._clock() - cache.loaded_at >= cache.ttl:
            return None  # needs a JWKS fetch: the caller awaits authenticate_async
        principal = self._finish(token, alg, kid, head, body, sig, key, cache.generation)
        if not self.allow_clients and type(principal) is AuthenticatedClient:
            raise InvalidToken("a client's token (client_credentials) is not accepted here")
        return principal

    @property
    def revocations(self) -> RevocationPoller | None:
        """The revocation feed's poller (its health: ``healthy``, ``failures``,
        ``last_success``, ``last_error``), or None when the feed is off."""
        return self._poller

    def clear_cache(self) -> None:
        """Forget verified tokens (done by itself whenever the JWKS changes)."""
        with self._verified_lock:
            self._verified = {}

    def prefetch(self) -> None:
        """Load discovery and the JWKS now (e.g. at startup) instead of on the first token.

        Raises :class:`ConfigurationError` when the server does not fit the settings (issuer
        mismatch, plain-http ``jwks_uri``); an unreachable server is only logged."""
        with self._cache.cond:
            if not self._cache.fetching and self._cache.stale(self._clock()):
                self._cache.claim(self._clock())
                fetch = True
            else:
                fetch = False
        if fetch:
            self._fetch_sync()
        if self._cache.config_error is not None:
            raise self._cache.config_error

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        if self._own_http and self._http is not None:
            self._http.close()
            self._http = None

    # --- parsing and checks -----------------------------------------------------------------

    def _fresh(self, until: float) -> bool:
        """A cached verification still holds: not expired, and the JWKS is within its TTL
        (past it, the full path runs and refreshes the keys, which may drop this token's)."""
        now = self._clock()
        cache = self._cache
        return now - self.leeway < until and now - cache.loaded_at < cache.ttl

    def _keys_changed(self) -> None:
        self._headers = {}
        self.clear_cache()

    def _parse(self, token: str) -> tuple[str, str, str, str, str]:
        """(alg, kid, header, payload, signature segments) of a well-formed token.

        The shape check is split up for speed: a header segment seen before with a good
        signature is known well-formed; a new one must match the base64url alphabet; the
        payload and signature are checked by the strict decoder (after _not_b64url)."""
        if type(token) is not str or len(token) > MAX_AUTHORIZATION_LENGTH:
            raise InvalidToken("malformed token")
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("malformed token")
        head, body, sig = parts
        known = self._headers.get(head)
        alg, kid = known if known is not None else self._parse_header(head)
        if _not_b64url(body) or _not_b64url(sig):
            raise InvalidToken("malformed token")
        return alg, kid, head, body, sig

    def _parse_header(self, head: str) -> tuple[str, str]:
        if _SEGMENT_RE.fullmatch(head) is None:
            raise InvalidToken("malformed token")
        try:
            header = _loads_json(_b64decode(head))
        except (ValueError, binascii.Error, RecursionError):  # RecursionError: deep nesting
            raise InvalidToken("malformed token") from None
        if type(header) is not dict:
            raise InvalidToken("malformed token")
        alg = header.get("alg")
        if type(alg) is not str or alg not in self.algorithms:
            raise InvalidToken("algorithm not allowed")
        if "crit" in header:
            raise InvalidToken("unsupported critical header parameters")
        if self.require_at_jwt:
            typ = header.get("typ")
            if type(typ) is not str or typ.lower().removeprefix("application/") != "at+jwt":
                raise InvalidToken("not an access token (typ is not at+jwt)")
        kid = header.get("kid")
        if type(kid) is not str or not kid or len(kid) > 256:
            raise InvalidToken("the token names no signing key")
        return alg, kid

    def _finish(
        self,
        token: str,
        alg: str,
        kid: str,
        head: str,
        body: str,
        sig: str,
        key: Key,
        generation: int,
    ) -> Principal:
        try:
            signature = _b64decode(sig)
        except binascii.Error:
            raise InvalidToken("malformed token") from None
        key.verify(alg, signature, token[: len(head) + len(body) + 1].encode())
        headers = self._headers
        if head not in headers and len(headers) < _HEADER_CACHE_SIZE:
            headers[head] = (alg, kid)
        try:
            claims = _loads_json(_b64decode(body))
        except (ValueError, binascii.Error, RecursionError):
            raise InvalidToken("malformed token") from None
        if type(claims) is not dict:
            raise InvalidToken("malformed token")
        until = self._check_claims(claims)
        poller = self._poller
        if poller is not None:
            if poller.pid != _getpid():
                poller.ensure_running()  # a forked process has no poller thread yet
            if self._revoked.refuses(claims.get("sid"), claims["iat"]):
                raise InvalidToken("the session was revoked")
        principal = principal_from_claims(claims)
        if self.cache_size > 0:
            self._remember(token, principal, until, generation)
        return principal

    def _remember(self, token: str, principal: Principal, until: float, generation: int) -> None:
        with self._verified_lock:
            if generation != self._cache.generation:
                # The JWKS changed while this token was being verified (its key may be gone):
                # remembering it now would outlive the clear_cache() that change did.
                return
            if self._poller is not None and _revoked_principal(self._revoked, principal):
                # Its session's revocation arrived while it was being verified (the feed
                # drops cached tokens under this same lock): answered once, never cached.
                return
            verified = self._verified
            if len(verified) >= self.cache_size:
                now = self._clock() - self.leeway
                for t in [t for t, (_, e) in verified.items() if e <= now]:
                    del verified[t]
                while len(verified) >= self.cache_size:  # still full: drop the oldest
                    del verified[next(iter(verified))]
            verified[token] = (principal, until)

    def _sessions_revoked(self, news: Mapping[str, float]) -> None:
        """The feed's poller: these sessions were just revoked; drop their cached tokens."""
        del news  # the RevokedSessions already holds them; checked per cached entry below
        revoked = self._revoked
        with self._verified_lock:
            self._verified = {
                t: hit
                for t, hit in self._verified.items()
                if not _revoked_principal(revoked, hit[0])
            }

    def _check_claims(self, claims: Mapping[str, Any]) -> float:
        """Raise InvalidToken unless the claims are acceptable now; return their exp."""
        issuer = self._issuer
        if issuer is None or claims.get("iss") != issuer:
            raise InvalidToken("wrong issuer")
        aud = claims.get("aud")
        audience = self._audience if self._audience is not None else self._issuer_set
        if type(aud) is str:
            if aud not in audience:
                raise InvalidToken("wrong audience")
        elif type(aud) is not list or not _any_in(aud, audience):
            raise InvalidToken("wrong audience")
        exp, iat = claims.get("exp"), claims.get("iat")
        # Inlined _number(): a bool is not a timestamp, nor is NaN or infinity.
        if not (type(exp) is int or (type(exp) is float and _isfinite(exp))):
            raise InvalidToken("exp and iat are required")
        if not (type(iat) is int or (type(iat) is float and _isfinite(iat))):
            raise InvalidToken("exp and iat are required")
        now, leeway = self._clock(), self.leeway
        if now - leeway >= exp:
            raise InvalidToken("the access token expired")
        if now + leeway < iat:
            raise InvalidToken("the access token is not valid yet")
        nbf = claims.get("nbf")
        if nbf is not None and (not _number(nbf) or now + leeway < nbf):
            raise InvalidToken("the access token is not valid yet")
        sub = claims.get("sub")
        if type(sub) is not str or not sub:
            raise InvalidToken("the access token has no subject")
        max_age = self.max_token_age
        if max_age is not None and exp - iat > max_age + leeway:
            # With exp valid and iat not in the future, this also bounds the token's age.
            raise InvalidToken("the access token's lifetime is longer than max_token_age")
        return exp

    # --- keys --------------------------------------------------------------------------------

    def _key_sync(self, kid: str) -> Key:
        cache = self._cache
        key = cache.keys.get(kid)  # the common case, lock-free: a known key, a fresh JWKS
        if key is not None and self._clock() - cache.loaded_at < cache.ttl:
            return key
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

    async def _key_async(self, kid: str) -> Key:
        cache = self._cache
        key = cache.keys.get(kid)
        if key is not None and self._clock() - cache.loaded_at < cache.ttl:
            return key
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
        if self._issuer is None and issuer.rstrip("/") != self.endpoint:
            raise ConfigurationError(
                f"discovery at {self.endpoint} says the issuer is {issuer!r}, not the "
                f"endpoint: pass issuer={issuer!r} to JWTVerifier if that is expected"
            )
        if self._jwks_uri is None:
            check_url(jwks_uri, "the jwks_uri from discovery", self.allow_insecure_http)
        if self._issuer is None:
            self._issuer = issuer.rstrip("/")
            self._issuer_set = frozenset((self._issuer,))
        self._jwks_uri = self._jwks_uri or jwks_uri

    def _fetch_sync(self) -> None:
        """Fetch (discovery and) the JWKS; the caller has claimed the fetch."""
        keys: dict[str, Key] | None = None
        refused: dict[str, str] = {}
        error: str | None = None
        config_error: ConfigurationError | None = None
        try:
            if self._http is None:
                self._http = httpx2.Client(timeout=self.timeout)
            if self._jwks_uri is None or self._issuer is None:
                self._apply_discovery(get_document(self._http, self._discovery_url(), "discovery"))
            assert self._jwks_uri is not None
            keys = parse_jwks(get_document(self._http, self._jwks_uri, "JWKS"), refused)
        except ConfigurationError as e:
            config_error = e
        except Exception as e:  # network, HTTP status, JSON: keep serving the keys we have
            error = f"{type(e).__name__}: {e}"
        finally:
            with self._cache.cond:
                self._cache.finish(keys, error, refused, config_error)

    async def _fetch_async(self) -> None:
        keys: dict[str, Key] | None = None
        refused: dict[str, str] = {}
        error: str | None = None
        config_error: ConfigurationError | None = None
        try:
            # JWKS fetches are rare: a short-lived client is not tied to any one event loop.
            async with httpx2.AsyncClient(timeout=self.timeout) as http:
                if self._jwks_uri is None or self._issuer is None:
                    document = await get_document_async(http, self._discovery_url(), "discovery")
                    self._apply_discovery(document)
                assert self._jwks_uri is not None
                document = await get_document_async(http, self._jwks_uri, "JWKS")
                keys = parse_jwks(document, refused)
        except ConfigurationError as e:
            config_error = e
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            with self._cache.cond:
                self._cache.finish(keys, error, refused, config_error)


def _revoked_principal(revoked: RevokedSessions, principal: Principal) -> bool:
    claims = principal.claims
    return revoked.refuses(claims.get("sid"), claims.get("iat", 0))


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Map verified access-token claims to who is calling.

    A client's own token (client_credentials) is recognised by ``gty: client-credentials``, or,
    for tokens from servers that do not set ``gty``, by a ``sub`` equal to its ``client_id``
    (a user's ``sub`` is a user id, never a client id)."""
    sub = claims["sub"]
    client_id = claims.get("client_id")
    scope = claims.get("scope")
    scopes = frozenset(scope.split()) if type(scope) is str else frozenset()
    exp = claims.get("exp")
    expires_at = int(exp) if _number(exp) else None
    if claims.get(CLAIM_GRANT_TYPE) == CLIENT_CREDENTIALS or sub == client_id:
        return AuthenticatedClient(
            client_id=client_id if type(client_id) is str and client_id else str(sub),
            scopes=scopes,
            expires_at=expires_at,
            source="jwt",
            credential="bearer",
            claims=claims,
        )
    roles = claims.get(CLAIM_ROLES)
    auth_time = claims.get("auth_time")
    return new_user(
        str(sub),
        tuple(r for r in roles if type(r) is str) if type(roles) is list and roles else (),
        claims.get(CLAIM_IS_VERIFIED) is True,
        claims.get(CLAIM_IS_ANONYMOUS) is True,
        claims.get(CLAIM_CAN_REAUTHENTICATE) is True,
        client_id if type(client_id) is str else None,
        scopes,
        int(auth_time) if _number(auth_time) else None,
        expires_at,
        (),  # amr: not in access tokens
        "jwt",
        "bearer",
        claims,
    )


def user_from_claims(claims: Mapping[str, Any]) -> AuthenticatedUser:
    """Map verified access-token claims to a user; :class:`InvalidToken` for a client's token."""
    return as_user(principal_from_claims(claims))
