"""Reading back the JWT access tokens this server signed (RFC 9068), for userinfo, the resolver
and revocation.

JWT access tokens have no row (issue 11): a refresh writes nothing, and storage grows with
sessions, not with requests. What a token says is trusted once its signature, by one of our
current keys, checks out; whether it still counts is asked of its session (the ``sid`` claim:
an app's grant or a browser session) on every use, so ending a session refuses its tokens at
once, on every process. The signature is checked with PyJWT on `cryptography`, once per token
string and process; the result is remembered until the token expires.
"""

from __future__ import annotations

from typing import Any

import jwt

from authgear.server.keys import ALGORITHM, KeySet
from authgear.server.storage import AccessTokenRecord
from authgear.server.tokens import CLAIM_GRANT_TYPE, CLIENT_CREDENTIALS_GTY, sha256_hex

# Verified tokens remembered per process (a record each, a few hundred bytes).
MAX_REMEMBERED = 10_000
_REQUIRED = ["exp", "iat", "sub", "jti", "client_id"]
CLOCK_SKEW = 60


class AccessTokenReader:
    """Our own JWT access tokens → their records. One per key set: a new key set (a key
    rotated in or retired) starts a new reader, so nothing verified by a retired key is
    remembered past its retirement."""

    def __init__(self, keys: KeySet, issuer: str) -> None:
        self.keys = keys
        self.issuer = issuer
        self._verified: dict[str, AccessTokenRecord] = {}

    def read(self, token: str, now: int) -> AccessTokenRecord | None:
        """The record of a JWT access token we signed that has not expired; None for anything
        else (an opaque token, an ID token, a forged or expired one, or a token from before
        access tokens carried ``sid``: those are looked up by their row)."""
        hit = self._verified.get(token)
        if hit is not None:
            return hit if hit.expires_at > now else None
        record = self._verify(token)
        if record is None or record.expires_at <= now:
            return None
        verified = self._verified
        if len(verified) >= MAX_REMEMBERED:
            for key in [k for k, r in verified.items() if r.expires_at <= now]:
                del verified[key]
            while len(verified) >= MAX_REMEMBERED:  # still full: forget the oldest
                del verified[next(iter(verified))]
        verified[token] = record
        return record

    def _verify(self, token: str) -> AccessTokenRecord | None:
        if token.count(".") != 2:
            return None  # not a JWS compact serialization: an opaque token
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return None
        # Only what we sign: RS256, typ at+jwt (an ID token, typ JWT, is no access token).
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or header.get("typ") != "at+jwt" or type(kid) is not str:
            return None
        key = self.keys.public_keys.get(kid)
        if key is None:
            return None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.issuer,
                issuer=self.issuer,
                options={"require": _REQUIRED},
                # For iat (and nbf) only: another server process on a host whose clock runs a
                # little ahead may have issued it. exp is checked strictly by read().
                leeway=CLOCK_SKEW,
            )
        except jwt.InvalidTokenError:
            return None
        return _record(token, claims)


def _record(token: str, claims: dict[str, Any]) -> AccessTokenRecord | None:
    """The record the claims describe. For a user's token ``session_kind`` is left empty: which
    kind of session ``sid`` names is read with the session (storage get_token_session)."""
    sub, client_id, jti = claims["sub"], claims["client_id"], claims["jti"]
    iat, exp = claims["iat"], claims["exp"]
    scope = claims.get("scope", "")
    if not all(type(v) is str for v in (sub, client_id, jti, scope)):
        return None
    if type(iat) is not int or type(exp) is not int:
        return None
    session_id: Any = ""
    auth_time: Any = None
    amr: Any = []
    if claims.get(CLAIM_GRANT_TYPE) == CLIENT_CREDENTIALS_GTY:
        kind, user_id = "client", None
    else:
        session_id, auth_time = claims.get("sid"), claims.get("auth_time")
        amr = claims.get("amr", [])
        if type(session_id) is not str:
            return None  # issued before tokens carried sid: its row says what it is
        if auth_time is not None and type(auth_time) is not int:
            return None
        if type(amr) is not list or not all(type(a) is str for a in amr):
            return None
        kind, user_id = "", sub
    return AccessTokenRecord(
        token_hash=sha256_hex(token),
        jti=jti,
        session_kind=kind,
        session_id=session_id,
        user_id=user_id,
        client_id=client_id,
        scope=scope,
        auth_time=auth_time,
        amr=amr,
        issued_at=iat,
        expires_at=exp,
    )
