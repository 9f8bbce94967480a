"""CSRF protection of the pages' POST forms: a token bound to the browser session or the login
flow, and an origin check.

The token is HMAC-SHA256(server key, cookie nonce | binding), where the binding is the login
flow (``flow:<id>`` on /login and /signup in an OAuth flow) or the browser session (a hash of the
session cookie), else ``anonymous``. A nonce cookie alone (plain double submit) can be *tossed*:
a sibling subdomain, or any other port of the same host (cookies ignore ports), can set
``authgear_csrf=<known>`` and then post ``csrf_token=<known>``. Bound to the session, a token
the attacker can obtain (from their own browser) is worthless in the victim's browser, whose
session differs. Under https the cookie is ``__Host-authgear_csrf`` (Secure, Path=/, no
Domain), which a sibling cannot set at all.

Every state-changing POST also passes :func:`same_origin`: a browser's ``Sec-Fetch-Site`` must
be ``same-origin``; without it, ``Origin`` must be this server's. Requests with neither header
are not from a browser (curl, tests) and rely on the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Collection, Mapping

COOKIE = "authgear_csrf"
# RFC 6265bis §4.1.3.2: only a Secure, Path=/, host-only cookie may carry this prefix.
HOST_COOKIE = "__Host-authgear_csrf"


def cookie_name(secure: bool) -> str:
    return HOST_COOKIE if secure else COOKIE


def binding(flow_id: str | None, session_cookie: str | None) -> str:
    """What a token is bound to: the login flow if the page belongs to one, else the browser
    session (its cookie, hashed), else nothing."""
    if flow_id:
        return f"flow:{flow_id[:200]}"
    if session_cookie:
        return "session:" + hashlib.sha256(session_cookie.encode()).hexdigest()
    return "anonymous"


def token(key: bytes, nonce: str, bound_to: str) -> str:
    mac = hmac.new(key, f"{nonce}\x00{bound_to}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def token_ok(key: bytes, nonce: str | None, bound_to: str, submitted: str | None) -> bool:
    if not nonce or not submitted or not 20 <= len(nonce) <= 100 or len(submitted) > 100:
        return False
    return hmac.compare_digest(token(key, nonce, bound_to).encode(), submitted.encode())


def same_origin(headers: Mapping[str, str], allowed_origins: Collection[str]) -> bool:
    """Whether a POST comes from one of our own pages, as far as the browser tells."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    origin = headers.get("origin")
    if origin is not None:
        return origin in allowed_origins
    return True
