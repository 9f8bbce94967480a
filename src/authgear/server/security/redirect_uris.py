"""Redirect URIs: one strict parser, and the comparison OAuth 2.1 and RFC 9700 §2.1 require.

A redirect URI is compared as a string with the registered one (RFC 9700 §2.1, OAuth 2.1
§2.3.1). The one exception is RFC 8252 §7.3: a *public* client whose registered URI is an http
loopback IP literal (``127.0.0.1`` or ``[::1]``) written without a port may use any port. A
registered port is exact, and ``localhost`` gets no exception (RFC 8252 §8.3 prefers the IP
literal: ``localhost`` can resolve elsewhere, and browsers and servers may disagree on it).

String equality is only safe when everyone reads the string the same way: the issue this module
fixes was ``http://evil.example\\@127.0.0.1:9999/cb``, which ``urllib`` reads as host 127.0.0.1
and a browser (WHATWG URL, where ``\\`` is ``/``) as host evil.example. So before any comparison
a URI must pass :func:`parse`, which accepts only a plain subset on which RFC 3986 and WHATWG
agree: printable ASCII, no backslash, no userinfo, no percent-encoding in the authority, no
fragment, no dot segments, lower-case host and scheme, a canonical IPv4 or IPv6 literal wherever
WHATWG would read an IP address, and a port of 1-65535 without leading zeros. The same parser
checks the registered URIs in the configuration. A differential test (tests/server/
test_redirect_uri_attacks.py) checks what we accept against Node's WHATWG ``URL``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import idna

MAX_LENGTH = 2000
# Schemes that may carry a redirect: http(s), and RFC 8252 §7.1 private-use schemes, which are a
# reversed domain name (so always contain a dot: never javascript:, data:, file: and the like).
WEB_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_LITERALS = frozenset({"127.0.0.1", "[::1]"})

_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*")
_PCT = r"%[0-9A-Fa-f]{2}"
# RFC 3986 pchar and "/": WHATWG leaves each of these as it is in a path.
_PATH_RE = re.compile(rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|{_PCT})*")
# The query's characters, without "'" (WHATWG percent-encodes it in http(s) queries).
_QUERY_RE = re.compile(rf"(?:[A-Za-z0-9\-._~!$&()*+,;=:@/?]|{_PCT})*")
_LABEL_RE = re.compile(r"[a-z0-9_-]+")
_OCTET_RE = re.compile(r"0|[1-9][0-9]{0,2}")
_PORT_RE = re.compile(r"[1-9][0-9]{0,4}")
# WHATWG resolves these path segments (percent-encoded dots too).
_DOT_SEGMENTS = frozenset({".", "..", "%2e", ".%2e", "%2e.", "%2e%2e"})


class InvalidRedirectURI(ValueError):
    """Why a redirect URI is refused (one line, safe to show: it never quotes the URI)."""


@dataclass(frozen=True, slots=True)
class RedirectURI:
    """A URI that passed :func:`parse`; ``str(uri)`` gives back exactly the parsed string."""

    scheme: str
    # None for a private-use URI without authority (``com.example.app:/callback``).
    host: str | None
    port: int | None
    path: str
    query: str | None

    def __str__(self) -> str:
        return self.without_port() if self.port is None else self._build(f":{self.port}")

    def without_port(self) -> str:
        return self._build("")

    def _build(self, port: str) -> str:
        authority = "" if self.host is None else f"//{self.host}{port}"
        query = "" if self.query is None else f"?{self.query}"
        return f"{self.scheme}:{authority}{self.path}{query}"

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` (``scheme:`` without authority), e.g. for a CSP source."""
        if self.host is None:
            return f"{self.scheme}:"
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port else "")

    @property
    def effective_port(self) -> int | None:
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme)

    @property
    def is_loopback_without_port(self) -> bool:
        """A registration that RFC 8252 §7.3 lets a public client use on any port."""
        return self.scheme == "http" and self.host in LOOPBACK_LITERALS and self.port is None


def parse(uri: str) -> RedirectURI:
    """The URI's parts, or :class:`InvalidRedirectURI` when any reader could see it otherwise."""
    if len(uri) > MAX_LENGTH:
        raise InvalidRedirectURI(f"longer than {MAX_LENGTH} characters")
    if any(not 0x21 <= ord(c) <= 0x7E for c in uri):
        raise InvalidRedirectURI("only printable ASCII (no spaces or control characters)")
    if "\\" in uri:
        raise InvalidRedirectURI("a backslash (browsers read it as /)")
    if "#" in uri:
        raise InvalidRedirectURI("a fragment")
    scheme, sep, rest = uri.partition(":")
    if not sep or not _SCHEME_RE.fullmatch(scheme):
        raise InvalidRedirectURI("not an absolute URI with a lower-case scheme")
    if scheme not in WEB_SCHEMES and "." not in scheme:
        raise InvalidRedirectURI("scheme must be http, https or a reversed domain (RFC 8252 §7.1)")
    rest, qsep, query = rest.partition("?")
    if qsep and not _QUERY_RE.fullmatch(query):
        raise InvalidRedirectURI("a character in the query that must be percent-encoded")
    host: str | None = None
    port: int | None = None
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        path = slash + path
        host, port = _authority(authority)
    elif scheme in WEB_SCHEMES:
        raise InvalidRedirectURI("an http(s) URI needs //host")
    else:
        path = rest
        if not path.startswith("/"):
            raise InvalidRedirectURI("a private-use URI needs a path starting with /")
    if not _PATH_RE.fullmatch(path):
        raise InvalidRedirectURI("a character in the path that must be percent-encoded")
    if any(seg.lower() in _DOT_SEGMENTS for seg in path.split("/")):
        raise InvalidRedirectURI("a . or .. path segment")
    parsed = RedirectURI(scheme, host, port, path, query if qsep else None)
    if str(parsed) != uri:  # cannot happen with the rules above; never guess
        raise InvalidRedirectURI("not in canonical form")
    return parsed


def _authority(authority: str) -> tuple[str, int | None]:
    if "@" in authority:
        raise InvalidRedirectURI("userinfo (user@ or user:password@)")
    if "%" in authority:
        raise InvalidRedirectURI("percent-encoding in the host")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise InvalidRedirectURI("an unclosed IPv6 literal")
        host, after = authority[: end + 1], authority[end + 1 :]
        _ipv6(host[1:-1])
    else:
        host, colon, port_text = authority.partition(":")
        after = colon + port_text
        _hostname(host)
    if not after:
        return host, None
    if not after.startswith(":") or not _PORT_RE.fullmatch(after[1:]) or int(after[1:]) > 65535:
        raise InvalidRedirectURI("the port must be a number from 1 to 65535")
    return host, int(after[1:])


def _ipv6(text: str) -> None:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        raise InvalidRedirectURI("not a valid IPv6 literal") from None
    if str(address) != text:
        # WHATWG serializes the compressed lower-case form; exact matching needs that form.
        raise InvalidRedirectURI(f"write the IPv6 literal as [{address}]")


def _hostname(host: str) -> None:
    if not host or len(host) > 253:
        raise InvalidRedirectURI("a missing or too long host")
    labels = host.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise InvalidRedirectURI("the host must be lower-case letters, digits, -, _ and dots")
    if not all(_punycode_ok(label) for label in labels if label.startswith("xn--")):
        raise InvalidRedirectURI("an xn-- label that is not the punycode of a lower-case name")
    last = labels[-1]
    # WHATWG reads a host whose last label is a number (decimal, 0x-hex, octal) as IPv4:
    # 127.1, 0x7f.0.0.1 and 2130706433 are all 127.0.0.1. Only the canonical form is accepted.
    looks_numeric = last.isdigit() or last.startswith("0x")
    if looks_numeric and (
        len(labels) != 4 or not all(_OCTET_RE.fullmatch(p) and int(p) <= 255 for p in labels)
    ):
        raise InvalidRedirectURI("an IPv4 address must be four decimal numbers 0-255")


def _punycode_ok(label: str) -> bool:
    """An IDN label that IDNA 2008 (the ``idna`` package) accepts as it is; WHATWG's UTS #46
    processing then leaves it unchanged (the differential test checks this)."""
    try:
        name = idna.decode(label)
        again = idna.encode(name).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
    return again == label and not name.isascii()


def check_registered(uri: str) -> str:
    """A redirect URI in the configuration (the same rules); ValueError says why."""
    try:
        parse(uri)
    except InvalidRedirectURI as e:
        raise ValueError(f"{uri[:200]!r} is not an acceptable redirect URI: {e}") from None
    return uri


def match(registered: Iterable[str], asked: str, *, loopback_any_port: bool) -> RedirectURI | None:
    """The asked URI, parsed, if it may be used: an exact registered string, or (when
    ``loopback_any_port``, i.e. a public client) a registered loopback IP literal without a
    port plus any port."""
    try:
        parsed = parse(asked)
    except InvalidRedirectURI:
        return None
    candidates = frozenset(registered)
    if asked in candidates:
        return parsed
    if not loopback_any_port or parsed.port is None:
        return None
    bare = parsed.without_port()
    if bare in candidates and parse(bare).is_loopback_without_port:
        return parsed
    return None


def refusal_reason(asked: str) -> str:
    """Why ``asked`` was refused, for the operator: the parser's reason, or that it is not
    registered (exactly) for the client."""
    try:
        parse(asked)
    except InvalidRedirectURI as e:
        return str(e)
    return "it is not registered for this client (redirect URIs match exactly)"


def add_query(uri: str, encoded: str) -> str:
    """Append form-encoded parameters to a validated URI's query (RFC 6749 §4.1.2)."""
    if "?" not in uri:
        return f"{uri}?{encoded}"
    return f"{uri}{encoded}" if uri.endswith(("?", "&")) else f"{uri}&{encoded}"
