"""Request parsing with limits, and OAuth error responses. Nothing here echoes secrets."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_FORM_BYTES = 64 * 1024
MAX_PARAM_CHARS = 4096

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """An error answered in the RFC 6749 §5.2 shape."""

    def __init__(
        self,
        error: str,
        description: str | None = None,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body: dict[str, str] = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return JSONResponse(body, status_code=self.status, headers={**NO_STORE, **self.headers})


def rate_limited() -> OAuthError:
    return OAuthError(
        "x_rate_limited", "too many requests", status=429, headers={"Retry-After": "60"}
    )


def parse_params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """One value per name (RFC 6749 §3.1: parameters must not repeat); bounded sizes."""
    out: dict[str, str] = {}
    for name, value in pairs:
        if name in out:
            raise OAuthError("invalid_request", f"duplicated parameter: {name[:40]}")
        if len(value) > MAX_PARAM_CHARS or len(name) > 100:
            raise OAuthError("invalid_request", f"parameter too long: {name[:40]}")
        out[name] = value
    return out


async def read_form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, at most 64 KiB."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise OAuthError("invalid_request", "request body too large", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "request body too large", status=413)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "malformed form body") from None
    return parse_params(pairs)


def query_params(request: Request) -> dict[str, str]:
    try:
        pairs = parse_qsl(request.url.query, keep_blank_values=True, max_num_fields=200)
    except ValueError:
        raise OAuthError("invalid_request", "malformed query") from None
    return parse_params(pairs)


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """HTTP Basic client credentials (RFC 6749 §2.3.1: form-urlencoded inside)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise OAuthError(
            "invalid_client",
            "malformed Basic credentials",
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="authgear"'},
        ) from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise OAuthError(
            "invalid_client",
            "malformed Basic credentials",
            status=401,
            headers={"WWW-Authenticate": 'Basic realm="authgear"'},
        )
    return unquote(user), unquote(password)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header (scheme case-insensitive)."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = value.strip()
    if not token or len(token) > 8192 or " " in token:
        return ""
    return token


def client_ip(request: Request, trusted_proxies: tuple[str, ...]) -> str | None:
    peer = request.client.host if request.client else None
    if peer and trusted_proxies and _ip_in(peer, trusted_proxies):
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            # The right-most address not itself a trusted proxy is the client.
            for hop in reversed([h.strip() for h in forwarded.split(",")]):
                if hop and not _ip_in(hop, trusted_proxies):
                    return hop[:64]
    return peer


def _ip_in(addr: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    for net in networks:
        try:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


def user_agent(request: Request) -> str | None:
    ua = request.headers.get("user-agent")
    return ua[:512] if ua else None


def json_response(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=NO_STORE)
