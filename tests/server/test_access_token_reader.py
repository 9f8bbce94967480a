"""The server's reader of its own JWT access tokens (server/access_tokens.py), directly, with
canned tokens signed by a real key set: what it accepts, what it returns, what it refuses, and
its memory of verified tokens."""

from __future__ import annotations

import time
from typing import Any

from authgear.server.access_tokens import CLOCK_SKEW, AccessTokenReader
from authgear.server.keys import KeySet, generate_signing_key
from authgear.server.tokens import sha256_hex

ISSUER = "https://auth.example.com"
KEYS = KeySet([generate_signing_key(int(time.time()) - 10)], int(time.time()))
# PyJWT checks exp and iat against the real clock: each test takes the time when it runs (the
# suite may run a module long after importing it).
NOW = 0


def setup_function() -> None:
    global NOW
    NOW = int(time.time())


def _claims(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": [ISSUER],
        "sub": "user-1",
        "client_id": "app",
        "scope": "openid offline_access",
        "iat": NOW,
        "exp": NOW + 600,
        "jti": "j-1",
        "sid": "grant-1",
        "auth_time": NOW - 5,
        "amr": ["pwd"],
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def test_a_users_token_becomes_its_record() -> None:
    token = KEYS.sign(_claims(), "at+jwt")
    record = AccessTokenReader(KEYS, ISSUER).read(token, NOW)
    assert record is not None
    assert (record.session_id, record.user_id, record.client_id) == ("grant-1", "user-1", "app")
    assert (record.auth_time, record.amr, record.expires_at) == (NOW - 5, ["pwd"], NOW + 600)
    assert record.session_kind == ""  # read with the session, from the database
    assert record.token_hash == sha256_hex(token)


def test_a_client_credentials_token_is_a_client_record() -> None:
    token = KEYS.sign(
        _claims(sub="m2m", client_id="m2m", gty="client-credentials", sid=None, auth_time=None),
        "at+jwt",
    )
    record = AccessTokenReader(KEYS, ISSUER).read(token, NOW)
    assert record is not None and record.session_kind == "client" and record.user_id is None


def test_refused_tokens() -> None:
    reader = AccessTokenReader(KEYS, ISSUER)
    other_keys = KeySet([generate_signing_key(NOW)], NOW)
    refused = {
        "an ID token": KEYS.sign(_claims(), "JWT"),
        "expired": KEYS.sign(_claims(exp=NOW - 1), "at+jwt"),
        "another issuer": KEYS.sign(_claims(iss="https://evil.example.com"), "at+jwt"),
        "another audience": KEYS.sign(_claims(aud="app"), "at+jwt"),
        "no sid (issued before sid: its row says)": KEYS.sign(_claims(sid=None), "at+jwt"),
        "sid not a string": KEYS.sign(_claims(sid=5), "at+jwt"),
        "amr not a list of strings": KEYS.sign(_claims(amr=[1]), "at+jwt"),
        "no jti": KEYS.sign(_claims(jti=None), "at+jwt"),
        "iat far ahead": KEYS.sign(_claims(iat=NOW + CLOCK_SKEW + 30), "at+jwt"),
        "a key not in the set": other_keys.sign(_claims(), "at+jwt"),
        "opaque": "an-opaque-token",
        "two dots, not base64": "a.b.c",
    }
    for why, token in refused.items():
        assert reader.read(token, NOW) is None, why


def test_a_little_clock_skew_in_iat_is_accepted() -> None:
    token = KEYS.sign(_claims(iat=NOW + CLOCK_SKEW - 5), "at+jwt")
    assert AccessTokenReader(KEYS, ISSUER).read(token, NOW) is not None


def test_a_remembered_token_still_expires() -> None:
    reader = AccessTokenReader(KEYS, ISSUER)
    token = KEYS.sign(_claims(exp=NOW + 60), "at+jwt")
    first = reader.read(token, NOW)
    assert first is not None and reader.read(token, NOW + 30) is first  # remembered
    assert reader.read(token, NOW + 60) is None  # expired, even remembered
