"""The request as authenticators see it, and the checks made on it before any credential is
believed: the Bearer header's shape, the real TCP peer, the origin of a cookie-authenticated
state-changing request."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

from authgear.backend._errors import CrossOriginRequest, InvalidToken, MissingCredentials

log = logging.getLogger("authgear.backend")

#: The longest ``Authorization`` header (and token) we look at; longer ones are refused unread.
MAX_AUTHORIZATION_LENGTH = 8192

#: Methods that change nothing (RFC 9110 §9.2.1): a cookie may authenticate them from anywhere.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Headers from which servers and middlewares rewrite the peer address (uvicorn's default
#: proxy-headers handling, Werkzeug's ProxyFix, Hypercorn's proxy fix, nginx's realip).
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


class RequestLike(Protocol):
    """The little an authenticator reads from a request; each adapter wraps its own."""

    def header(self, name: str) -> str | None:
        """The value of a header (``name`` is lower case), or None."""
        ...

    def cookie(self, name: str) -> str | None: ...

    @property
    def peer(self) -> str | None:
        """The address of the TCP peer (the proxy, when there is one), or None when it is not
        known for certain (e.g. the server took it from an ``X-Forwarded-For`` header)."""
        ...

    @property
    def method(self) -> str:
        """The HTTP method, upper case."""
        ...


class SimpleRequest:
    """A :class:`RequestLike` from plain values: for tests, scripts and custom frameworks.

    ``peer`` must be the socket's peer address, never one read from a header."""

    __slots__ = ("_cookies", "_headers", "_method", "_peer")

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        peer: str | None = None,
        method: str = "GET",
    ) -> None:
        self._headers = {k.lower(): v for k, v in (headers or {}).items()}
        self._cookies = dict(cookies or {})
        self._peer = peer
        self._method = method.upper()

    def header(self, name: str) -> str | None:
        return self._headers.get(name)

    def cookie(self, name: str) -> str | None:
        return self._cookies.get(name)

    @property
    def peer(self) -> str | None:
        return self._peer

    @property
    def method(self) -> str:
        return self._method


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header.

    No header or another scheme: :class:`MissingCredentials` (RFC 6750 §3.1: no error code).
    An oversized header, an empty token or one with spaces: :class:`InvalidToken`.
    """
    if not authorization:
        raise MissingCredentials()
    if len(authorization) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidToken("the Authorization header is too long")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingCredentials("Bearer authentication required")
    token = value.strip()
    if not token or " " in token or "\t" in token:
        raise InvalidToken("malformed Bearer token")
    return token


# --- the real peer -------------------------------------------------------------------------


def _forwarded_hosts(values: Iterable[str]) -> set[str]:
    """Every host named in forwarding header values, as a server would have parsed it."""
    hosts: set[str] = set()
    for value in values:
        for item in value.replace(";", ",").split(","):
            item = item.strip()
            name, sep, rest = item.partition("=")
            if sep:  # RFC 7239 Forwarded: only for= names a client
                if name.strip().lower() != "for":
                    continue
                item = rest.strip().strip('"')
            if item.startswith("["):  # [v6] or [v6]:port
                item = item[1 : item.find("]")] if "]" in item else item[1:]
            elif item.count(":") == 1:  # v4:port
                item = item.split(":", 1)[0]
            if item:
                hosts.add(item.lower())
                with contextlib.suppress(ValueError):
                    hosts.add(str(ipaddress.ip_address(item)))
    return hosts


_warned_rewrites: set[str] = set()


def socket_peer(address: str | None, forwarding_values: Iterable[str]) -> str | None:
    """``address`` (what the server says the peer is), unless a forwarding header names it.

    ASGI servers and WSGI middlewares replace the peer address with one taken from
    ``X-Forwarded-For`` (uvicorn does it by default for requests from 127.0.0.1). After that the
    address is whatever the client wrote, and trusting it makes the ``trusted_proxies`` check
    worthless. Whatever such a rewrite produces appears in the header, so a peer named by a
    forwarding header is treated as unknown (None): callers refuse it, and we log once how to
    turn the rewriting off.
    """
    if not address:
        return None
    values = [v for v in forwarding_values if v]
    if not values:
        return address
    hosts = _forwarded_hosts(values)
    candidates = {address.lower()}
    with contextlib.suppress(ValueError):
        candidates.add(str(ipaddress.ip_address(address)))
    if hosts.isdisjoint(candidates):
        return address
    if address not in _warned_rewrites and len(_warned_rewrites) < 1000:
        _warned_rewrites.add(address)
        log.warning(
            "the peer address %s is named in a forwarding header: the server or a middleware "
            "took it from X-Forwarded-For, so it is not the real peer. Trusted-proxy mode "
            "refuses such requests: run uvicorn with --no-proxy-headers (or "
            "--forwarded-allow-ips pointing at nothing), remove ProxyFix, and prefer a "
            "proxy_secret",
            address,
        )
    return None


# --- cookies and origins -------------------------------------------------------------------


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, default ports dropped; '' when not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in ("http", "https") or not host or parts.path not in ("", "/"):
        return ""
    if parts.username is not None or parts.query or parts.fragment:
        return ""
    default = 443 if scheme == "https" else 80
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def check_cookie_request(request: RequestLike, allowed_origins: frozenset[str]) -> None:
    """Refuse a cookie-authenticated unsafe request (POST, PUT, ...) that a page of another
    origin may have forged: it needs an ``Origin`` header naming one of ``allowed_origins``,
    or, when none are configured, the host the request was sent to (its ``Host`` header)."""
    method = getattr(request, "method", None)  # a custom RequestLike may predate `method`
    if isinstance(method, str) and method.upper() in SAFE_METHODS:
        return
    origin = normalize_origin(request.header("origin") or "")
    if not origin:
        raise CrossOriginRequest("a cookie-authenticated request needs an Origin header")
    if allowed_origins:
        if origin not in allowed_origins:
            raise CrossOriginRequest()
        return
    host = (request.header("host") or "").strip().lower()
    netloc = origin.split("://", 1)[1]
    default = ":443" if origin.startswith("https:") else ":80"
    if not host or netloc not in (host, host.removesuffix(default)):
        raise CrossOriginRequest()
