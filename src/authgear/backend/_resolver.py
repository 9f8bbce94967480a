"""Ask Authgear who is calling (the resolver), or read what a trusted proxy asked it.

Both read the same ``x-authgear-*`` headers: ``X-Authgear-Session-Valid`` absent means no
credentials were seen, ``false`` means they were invalid, expired or revoked, ``true`` comes with
``X-Authgear-User-Id`` and the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable

import httpx2

from authgear.backend._types import (
    MAX_AUTHORIZATION_LENGTH,
    AuthenticatedUser,
    BackendUnavailable,
    ConfigurationError,
    InvalidToken,
    MissingCredentials,
    RequestLike,
    Source,
    bearer_token,
)

log = logging.getLogger("authgear.backend")

#: Every header the resolver sets. A proxy in front of a backend in trusted-proxy mode must
#: set or remove each of them, so that a client cannot send its own.
RESOLVER_HEADERS = (
    "x-authgear-session-valid",
    "x-authgear-user-id",
    "x-authgear-user-anonymous",
    "x-authgear-user-verified",
    "x-authgear-user-can-reauthenticate",
    "x-authgear-user-roles",
    "x-authgear-session-amr",
    "x-authgear-session-authenticated-at",
)


def user_from_headers(get: Callable[[str], str | None], source: Source) -> AuthenticatedUser:
    """Map resolver headers (``get`` takes a lower-case name) to a user, or raise."""
    valid = get("x-authgear-session-valid")
    if valid is None or valid == "":
        raise MissingCredentials()
    if valid.strip().lower() != "true":
        raise InvalidToken("the session is invalid, expired or revoked")
    sub = (get("x-authgear-user-id") or "").strip()
    if not sub:
        raise InvalidToken("the session is invalid, expired or revoked")

    def flag(name: str) -> bool:
        return (get(name) or "").strip().lower() == "true"

    roles = get("x-authgear-user-roles") or ""
    amr = get("x-authgear-session-amr") or ""
    auth_at = (get("x-authgear-session-authenticated-at") or "").strip()
    headers = {name: v for name in RESOLVER_HEADERS if (v := get(name)) is not None}
    return AuthenticatedUser(
        sub=sub,
        roles=tuple(r for r in (x.strip() for x in roles.split(",")) if r),
        is_verified=flag("x-authgear-user-verified"),
        is_anonymous=flag("x-authgear-user-anonymous"),
        can_reauthenticate=flag("x-authgear-user-can-reauthenticate"),
        authenticated_at=int(auth_at) if auth_at.isascii() and auth_at.isdigit() else None,
        amr=tuple(amr.split()),
        source=source,
        claims=headers,
    )


class ResolverClient:
    """Ask Authgear's resolver about each request's credentials (Bearer token or session cookie).

    Revocation takes effect at once: the resolver checks the server's records on every call.
    The price is one HTTP round trip to Authgear per request (pooled keep-alive connections).
    ``cache_ttl`` (off by default) remembers valid answers for that many seconds per credential:
    fewer calls, but a revoked session keeps working for up to ``cache_ttl`` seconds.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        resolver_url: str | None = None,
        cookie_name: str | None = "session",
        timeout: float = 5.0,
        cache_ttl: float = 0.0,
        cache_size: int = 10_000,
        max_connections: int = 100,
        clock: Callable[[], float] = time.monotonic,
        http_client: httpx2.Client | None = None,
    ) -> None:
        if resolver_url is None:
            if endpoint is None:
                raise ConfigurationError("give endpoint or resolver_url")
            resolver_url = endpoint.rstrip("/") + "/_resolver/resolve"
        self.resolver_url = resolver_url
        self.cookie_name = cookie_name
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self._limits = httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._clock = clock
        self._http = http_client
        self._own_http = http_client is None
        self._http_lock = threading.Lock()
        self._async_http: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, httpx2.AsyncClient
        ] = weakref.WeakKeyDictionary()
        self._cache: OrderedDict[str, tuple[float, AuthenticatedUser]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ResolverClient(resolver_url={self.resolver_url!r})"

    # --- public API ----------------------------------------------------------------------

    def resolve(
        self, authorization: str | None, session_cookie: str | None = None
    ) -> AuthenticatedUser:
        headers = self._credentials(authorization, session_cookie)
        cached = self._cached(headers)
        if cached is not None:
            return cached
        try:
            response = self._client().get(self.resolver_url, headers=headers)
        except httpx2.TransportError as e:
            raise BackendUnavailable(f"resolver: {type(e).__name__}") from None
        return self._answer(headers, response)

    async def resolve_async(
        self, authorization: str | None, session_cookie: str | None = None
    ) -> AuthenticatedUser:
        headers = self._credentials(authorization, session_cookie)
        cached = self._cached(headers)
        if cached is not None:
            return cached
        try:
            response = await self._async_client().get(self.resolver_url, headers=headers)
        except httpx2.TransportError as e:
            raise BackendUnavailable(f"resolver: {type(e).__name__}") from None
        return self._answer(headers, response)

    def authenticate(self, request: RequestLike) -> AuthenticatedUser:
        return self.resolve(request.header("authorization"), self._cookie(request))

    async def authenticate_async(self, request: RequestLike) -> AuthenticatedUser:
        return await self.resolve_async(request.header("authorization"), self._cookie(request))

    def close(self) -> None:
        if self._own_http and self._http is not None:
            self._http.close()
            self._http = None

    async def aclose(self) -> None:
        """Close this event loop's connection pool."""
        client = self._async_http.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # --- internals ---------------------------------------------------------------------------

    def _cookie(self, request: RequestLike) -> str | None:
        return request.cookie(self.cookie_name) if self.cookie_name else None

    def _credentials(self, authorization: str | None, cookie: str | None) -> dict[str, str]:
        """What to forward: a well-formed Bearer header first, else the session cookie only
        (never the app's other cookies)."""
        try:
            token = bearer_token(authorization)
            return {"authorization": f"Bearer {token}"}
        except MissingCredentials:
            pass
        if cookie and self.cookie_name:
            if len(cookie) > MAX_AUTHORIZATION_LENGTH or any(c in cookie for c in ";\r\n"):
                raise InvalidToken("malformed session cookie")
            return {"cookie": f"{self.cookie_name}={cookie}"}
        raise MissingCredentials()

    def _client(self) -> httpx2.Client:
        if self._http is None:
            with self._http_lock:
                if self._http is None:
                    self._http = httpx2.Client(timeout=self.timeout, limits=self._limits)
        return self._http

    def _async_client(self) -> httpx2.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async_http.get(loop)
        if client is None:
            client = httpx2.AsyncClient(timeout=self.timeout, limits=self._limits)
            self._async_http[loop] = client
        return client

    def _answer(self, sent: dict[str, str], response: httpx2.Response) -> AuthenticatedUser:
        if response.status_code != 200:
            raise BackendUnavailable(f"resolver: HTTP {response.status_code}")
        headers = response.headers
        if headers.get("x-authgear-session-valid") is None:
            # We sent credentials; no answer about them means the resolver did not see them.
            raise InvalidToken("the credentials were not accepted")
        user = user_from_headers(headers.get, "resolver")
        self._store(sent, user)
        return user

    def _cache_key(self, sent: dict[str, str]) -> str:
        value = sent.get("authorization") or sent.get("cookie") or ""
        return hashlib.sha256(value.encode()).hexdigest()

    def _cached(self, sent: dict[str, str]) -> AuthenticatedUser | None:
        if self.cache_ttl <= 0:
            return None
        key = self._cache_key(sent)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            if hit[0] <= self._clock():
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return hit[1]

    def _store(self, sent: dict[str, str], user: AuthenticatedUser) -> None:
        if self.cache_ttl <= 0:
            return
        with self._cache_lock:
            self._cache[self._cache_key(sent)] = (self._clock() + self.cache_ttl, user)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


class TrustedProxyHeaders:
    """Read the ``x-authgear-*`` headers that nginx ``auth_request`` or Traefik ForwardAuth set
    after asking the resolver, from requests whose TCP peer is a trusted proxy.

    Spoofing risk: anyone who can reach the backend without passing through the proxy can send
    these headers and be whoever they like. Only use this mode when the backend listens where
    only the proxy can reach it (a Unix socket, a private network, a firewall), and make the
    proxy set or remove every header in :data:`RESOLVER_HEADERS`. ``trusted_proxies`` lists
    the proxy's addresses or networks; requests from any other peer are treated as carrying
    no credentials (and logged). ``["*"]`` trusts every peer: only for a backend on a Unix
    socket or behind a network boundary you control.
    """

    def __init__(self, *, trusted_proxies: Iterable[str]) -> None:
        proxies = list(trusted_proxies)
        if not proxies:
            raise ConfigurationError("trusted_proxies must name the proxy (or '*')")
        self._any = "*" in proxies
        self._networks = [ipaddress.ip_network(p, strict=False) for p in proxies if p != "*"]
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        nets = ["*"] if self._any else [str(n) for n in self._networks]
        return f"TrustedProxyHeaders(trusted_proxies={nets!r})"

    def trusts(self, peer: str | None) -> bool:
        if self._any:
            return True
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self._networks)

    def authenticate(self, request: RequestLike) -> AuthenticatedUser:
        if not self.trusts(request.peer):
            peer = request.peer or "?"
            if request.header("x-authgear-session-valid") is not None and peer not in self._warned:
                self._warned.add(peer)
                log.warning("ignoring x-authgear-* headers from untrusted peer %s", peer)
            raise MissingCredentials()
        return user_from_headers(request.header, "proxy")

    async def authenticate_async(self, request: RequestLike) -> AuthenticatedUser:
        return self.authenticate(request)
