"""Ask Authgear who is calling (the resolver), or read what a trusted proxy asked it.

Both read the same ``x-authgear-*`` headers: ``X-Authgear-Session-Valid`` absent means no
credentials were seen, ``false`` means they were invalid, expired or revoked, ``true`` comes with
``X-Authgear-User-Id`` and the rest. A client's own token (client_credentials) is never a
session: ``X-Authgear-Session-Valid: false`` with ``X-Authgear-Client-Valid: true``,
``X-Authgear-Client-Id`` and ``X-Authgear-Client-Scopes``, so that a backend which knows only the
session headers refuses it. ``X-Authgear-Credential`` says whether a Bearer token or the
session cookie was presented.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable

import httpx2

from authgear.backend._errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidToken,
    MissingCredentials,
)
from authgear.backend._request import (
    MAX_AUTHORIZATION_LENGTH,
    RequestLike,
    bearer_token,
    check_cookie_request,
    normalize_origin,
)
from authgear.backend._types import (
    AuthenticatedClient,
    AuthenticatedUser,
    Credential,
    Principal,
    Source,
    admit,
    as_user,
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
    "x-authgear-credential",
    "x-authgear-client-valid",
    "x-authgear-client-id",
    "x-authgear-client-scopes",
)

#: The header a proxy sets to prove it is the proxy (``TrustedProxyHeaders(proxy_secret=...)``).
PROXY_SECRET_HEADER = "x-authgear-proxy-secret"


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def principal_from_headers(
    get: Callable[[str], str | None], source: Source, credential: Credential = "bearer"
) -> Principal:
    """Map resolver headers (``get`` takes a lower-case name) to who is calling, or raise.

    ``credential`` is used when ``x-authgear-credential`` does not say (older servers)."""
    valid = get("x-authgear-session-valid")
    if valid is None or valid == "":
        raise MissingCredentials()
    said = (get("x-authgear-credential") or "").strip().lower()
    if said in ("bearer", "cookie"):
        credential = "cookie" if said == "cookie" else "bearer"
    headers = {name: v for name in RESOLVER_HEADERS if (v := get(name)) is not None}
    if not _true(valid):
        client_id = (get("x-authgear-client-id") or "").strip()
        if _true(get("x-authgear-client-valid")) and client_id and credential == "bearer":
            scopes = frozenset((get("x-authgear-client-scopes") or "").split())
            return AuthenticatedClient(client_id, scopes, None, source, "bearer", headers)
        raise InvalidToken("the session is invalid, expired or revoked")
    sub = (get("x-authgear-user-id") or "").strip()
    if not sub:
        raise InvalidToken("the session is invalid, expired or revoked")
    roles = get("x-authgear-user-roles") or ""
    amr = get("x-authgear-session-amr") or ""
    auth_at = (get("x-authgear-session-authenticated-at") or "").strip()
    return AuthenticatedUser(
        sub=sub,
        roles=tuple(r for r in (x.strip() for x in roles.split(",")) if r),
        is_verified=_true(get("x-authgear-user-verified")),
        is_anonymous=_true(get("x-authgear-user-anonymous")),
        can_reauthenticate=_true(get("x-authgear-user-can-reauthenticate")),
        authenticated_at=int(auth_at) if auth_at.isascii() and auth_at.isdigit() else None,
        amr=tuple(amr.split()),
        source=source,
        credential=credential,
        claims=headers,
    )


def user_from_headers(get: Callable[[str], str | None], source: Source) -> AuthenticatedUser:
    """Like :func:`principal_from_headers`, refusing a client (:class:`InvalidToken`)."""
    return as_user(principal_from_headers(get, source))


def _origins(values: Iterable[str]) -> frozenset[str]:
    origins = set()
    for value in values:
        origin = normalize_origin(value)
        if not origin:
            raise ConfigurationError(f"{value!r} is not an origin like https://app.example.com")
        origins.add(origin)
    return frozenset(origins)


class _Health:
    """Log once when Authgear stops answering, and once when it is back; never per request."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing = False
        self._lock = threading.Lock()

    def failed(self, reason: str) -> None:
        with self._lock:
            if self.failing:
                return
            self.failing = True
        log.warning("%s unreachable (%s): answering 503 until it is back", self.what, reason)

    def ok(self) -> None:
        if not self.failing:  # the hot path: one attribute read
            return
        with self._lock:
            if not self.failing:
                return
            self.failing = False
        log.warning("%s reachable again", self.what)


class ResolverClient:
    """Ask Authgear's resolver about each request's credentials (a Bearer token, or, where the
    app allows it, the browser's session cookie).

    Revocation takes effect at once: the resolver checks the server's records on every call.
    The price is one HTTP round trip to Authgear per request (pooled keep-alive connections).
    ``cache_ttl`` (off by default) remembers valid answers for that many seconds per credential:
    fewer calls, but a revoked session keeps working for up to ``cache_ttl`` seconds.

    Cookie authentication is off unless ``cookie_name`` names Authgear's session cookie (an
    API backend on the same site as Authgear's pages). Then unsafe methods (POST, PUT, PATCH,
    DELETE, ...) authenticated by the cookie need an ``Origin`` in ``allowed_origins`` (or, when
    none are given, the origin the request was sent to): otherwise any page could make the
    browser send them. ``allow_clients=True`` accepts client_credentials tokens as
    :class:`AuthenticatedClient`.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        resolver_url: str | None = None,
        cookie_name: str | None = None,
        allowed_origins: Iterable[str] = (),
        allow_clients: bool = False,
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
        self.allowed_origins = _origins(allowed_origins)
        self.allow_clients = allow_clients
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
        self._cache: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._health = _Health(f"the Authgear resolver at {resolver_url}")

    def __repr__(self) -> str:
        return f"ResolverClient(resolver_url={self.resolver_url!r})"

    # --- public API ----------------------------------------------------------------------

    def resolve(
        self, authorization: str | None, session_cookie: str | None = None
    ) -> AuthenticatedUser:
        """The user behind a Bearer header (or a session cookie); a client's token is refused.
        Passing ``session_cookie`` here skips the origin check :meth:`authenticate` makes."""
        return as_user(self.resolve_principal(authorization, session_cookie))

    def resolve_principal(
        self, authorization: str | None, session_cookie: str | None = None
    ) -> Principal:
        headers = self._credentials(authorization, session_cookie)
        cached = self._cached(headers)
        if cached is not None:
            return admit(cached, self.allow_clients)
        try:
            response = self._client().get(self.resolver_url, headers=headers)
        except httpx2.TransportError as e:
            self._health.failed(type(e).__name__)
            raise BackendUnavailable(f"resolver: {type(e).__name__}") from None
        return admit(self._answer(headers, response), self.allow_clients)

    async def resolve_async(
        self, authorization: str | None, session_cookie: str | None = None
    ) -> AuthenticatedUser:
        return as_user(await self.resolve_principal_async(authorization, session_cookie))

    async def resolve_principal_async(
        self, authorization: str | None, session_cookie: str | None = None
    ) -> Principal:
        headers = self._credentials(authorization, session_cookie)
        cached = self._cached(headers)
        if cached is not None:
            return admit(cached, self.allow_clients)
        try:
            response = await self._async_client().get(self.resolver_url, headers=headers)
        except httpx2.TransportError as e:
            self._health.failed(type(e).__name__)
            raise BackendUnavailable(f"resolver: {type(e).__name__}") from None
        return admit(self._answer(headers, response), self.allow_clients)

    def authenticate(self, request: RequestLike) -> Principal:
        principal = self.resolve_principal(request.header("authorization"), self._cookie(request))
        if principal.credential == "cookie":
            check_cookie_request(request, self.allowed_origins)
        return principal

    async def authenticate_async(self, request: RequestLike) -> Principal:
        authorization, cookie = request.header("authorization"), self._cookie(request)
        principal = await self.resolve_principal_async(authorization, cookie)
        if principal.credential == "cookie":
            check_cookie_request(request, self.allowed_origins)
        return principal

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

    def _answer(self, sent: dict[str, str], response: httpx2.Response) -> Principal:
        if response.status_code != 200:
            self._health.failed(f"HTTP {response.status_code}")
            raise BackendUnavailable(f"resolver: HTTP {response.status_code}")
        self._health.ok()
        headers = response.headers
        if headers.get("x-authgear-session-valid") is None:
            # We sent credentials; no answer about them means the resolver did not see them.
            raise InvalidToken("the credentials were not accepted")
        # What we sent decides the credential type, whatever the answer claims.
        credential: Credential = "bearer" if "authorization" in sent else "cookie"
        principal = principal_from_headers(headers.get, "resolver", credential)
        if principal.credential != credential:
            raise InvalidToken("the resolver's answer does not match the credentials sent")
        self._store(sent, principal)
        return principal

    def _cache_key(self, sent: dict[str, str]) -> str:
        value = sent.get("authorization") or sent.get("cookie") or ""
        return hashlib.sha256(value.encode()).hexdigest()

    def _cached(self, sent: dict[str, str]) -> Principal | None:
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

    def _store(self, sent: dict[str, str], principal: Principal) -> None:
        if self.cache_ttl <= 0:
            return
        with self._cache_lock:
            self._cache[self._cache_key(sent)] = (self._clock() + self.cache_ttl, principal)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


class _Unplaceheld:
    """A request whose ``x-authgear-*`` values that are a proxy's unreplaced placeholder read as
    absent. Caddy before 2.7 sends ``{http.reverse_proxy.header.X-Authgear-User-Roles}``
    literally for a header the resolver did not answer with (e.g. a user without roles); no
    value the resolver sends starts with ``{``. Only ever makes a header absent."""

    __slots__ = ("_request",)

    def __init__(self, request: RequestLike) -> None:
        self._request = request

    def header(self, name: str) -> str | None:
        value = self._request.header(name)
        if value is not None and value.startswith("{") and value.endswith("}"):
            return None
        return value


class TrustedProxyHeaders:
    """Read the ``x-authgear-*`` headers that nginx ``auth_request``, Traefik ForwardAuth or
    Caddy ``forward_auth`` set after asking the resolver, from requests that provably come
    from that proxy.

    Spoofing risk: anyone who can reach the backend without passing through the proxy can send
    these headers and be whoever they like. Two proofs, use one or (better) both:

    - ``proxy_secret``: the proxy sets ``X-Authgear-Proxy-Secret`` (``secret_header``) to this
      value on every request (nginx ``proxy_set_header``, Traefik ``customRequestHeaders``,
      Caddy ``header_up``); compared in constant time. Works whatever the network looks like.
    - ``trusted_proxies``: the proxy's addresses or networks, checked against the *socket*
      peer. Servers that rewrite the peer from ``X-Forwarded-For`` (uvicorn does by default for
      127.0.0.1) defeat that check, so a peer named by a forwarding header counts as unknown
      and is refused (run uvicorn with ``--no-proxy-headers``). ``["*"]`` trusts every peer:
      only with a secret, or a Unix socket.

    Requests failing a proof are treated as carrying no credentials (401, logged once per peer).
    The proxy must set or remove every header in :data:`RESOLVER_HEADERS`. A session cookie the
    proxy resolved is refused unless ``allow_cookies=True``, and then unsafe methods need an
    allowed ``Origin`` (see :class:`ResolverClient`).
    """

    def __init__(
        self,
        *,
        trusted_proxies: Iterable[str] | None = None,
        proxy_secret: str | None = None,
        secret_header: str = PROXY_SECRET_HEADER,
        allow_cookies: bool = False,
        allowed_origins: Iterable[str] = (),
        allow_clients: bool = False,
    ) -> None:
        proxies = list(trusted_proxies or ())
        if not proxies and not proxy_secret:
            raise ConfigurationError(
                "trusted-proxy mode needs proxy_secret and/or trusted_proxies (or '*')"
            )
        if proxy_secret is not None and len(proxy_secret) < 16:
            raise ConfigurationError("proxy_secret must be at least 16 characters")
        self._check_peer = bool(proxies) and "*" not in proxies
        self._networks = [ipaddress.ip_network(p, strict=False) for p in proxies if p != "*"]
        self._secret = proxy_secret.encode() if proxy_secret else None
        self.secret_header = secret_header.lower()
        self.allow_cookies = allow_cookies
        self.allowed_origins = _origins(allowed_origins)
        self.allow_clients = allow_clients
        self._warned: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        nets = [str(n) for n in self._networks] if self._check_peer else ["*"]
        secret = ", proxy_secret=<set>" if self._secret else ""
        return f"TrustedProxyHeaders(trusted_proxies={nets!r}{secret})"

    def trusts(self, peer: str | None) -> bool:
        if not self._check_peer:
            return True
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self._networks)

    def _refuse(self, request: RequestLike, why: str) -> MissingCredentials:
        peer = request.peer or "an unknown peer"
        claimed = request.header("x-authgear-session-valid") is not None
        if claimed and (peer, why) not in self._warned and len(self._warned) < 1000:
            self._warned.add((peer, why))
            log.warning("ignoring x-authgear-* headers from %s: %s", peer, why)
        return MissingCredentials()

    def authenticate(self, request: RequestLike) -> Principal:
        if self._secret is not None:
            sent = (request.header(self.secret_header) or "").encode("latin-1", "replace")
            if not hmac.compare_digest(sent, self._secret):
                raise self._refuse(request, "no or wrong proxy secret")
        if not self.trusts(request.peer):
            raise self._refuse(request, "not a trusted proxy")
        authorization = request.header("authorization")
        fallback: Credential = "bearer" if authorization else "cookie"
        principal = principal_from_headers(_Unplaceheld(request).header, "proxy", fallback)
        admit(principal, self.allow_clients)
        if principal.credential == "cookie":
            if not self.allow_cookies:
                raise MissingCredentials("cookie authentication is not enabled for this API")
            check_cookie_request(request, self.allowed_origins)
        return principal

    async def authenticate_async(self, request: RequestLike) -> Principal:
        return self.authenticate(request)

    def authenticate_nowait(self, request: RequestLike) -> Principal:
        """Never needs I/O: the same as :meth:`authenticate` (see the ASGI middleware)."""
        return self.authenticate(request)
