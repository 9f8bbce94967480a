"""The attack corpus: every forged or broken credential is a 401, never a 500.

Tokens are forged with PyJWT and cryptography; for tokens with wrong claims but a good
signature, the server's own private key is read from its SQLite database. Each case is sent to
the example backends in JWT mode (FastAPI and Flask, real processes) and given to
``JWTVerifier`` directly (sync and async).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import httpx2
import jwt
import pytest
from backend_support import access_claims, b64, b64json, mint, signing_keys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agtest.server import ServerProcess, tokens_for
from authgear.backend import (
    AuthError,
    InvalidToken,
    JWTVerifier,
    MissingCredentials,
    SimpleRequest,
)


def _flip(segment: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return b64(bytes(raw))


def corpus(server: ServerProcess) -> dict[str, tuple[str, bool]]:
    """name → (Authorization header value, whether the answer carries error=invalid_token)."""
    kid, key, _ = signing_keys(server)[0]
    now = int(time.time())
    good = mint(key, kid, access_claims(server))
    head, body, sig = good.split(".")
    tokens, _email = tokens_for(server)
    id_token = tokens["id_token"]
    real_access = tokens["access_token"]
    rhead, rbody, rsig = real_access.split(".")
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_head = b64json({"alg": "HS256", "typ": "at+jwt", "kid": kid})
    hs_input = f"{hs_head}.{body}".encode()
    hs_sig = b64(hmac.new(public_pem, hs_input, hashlib.sha256).digest())
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    none_head = b64json({"alg": "none", "typ": "at+jwt", "kid": kid})
    tampered_claims = json.loads(base64.urlsafe_b64decode(rbody + "=" * (-len(rbody) % 4)))
    tampered_claims["sub"] = "someone-else"
    cases: dict[str, tuple[str, bool]] = {
        "alg none, no signature": (f"Bearer {none_head}.{body}.", True),
        "alg none, junk signature": (f"Bearer {none_head}.{body}.{sig}", True),
        "alg NONE": (f"Bearer {b64json({'alg': 'NONE', 'kid': kid})}.{body}.{sig}", True),
        "HS256 with the public key": (f"Bearer {hs_head}.{body}.{hs_sig}", True),
        "unknown kid": (f"Bearer {mint(key, str(uuid.uuid4()), access_claims(server))}", True),
        "no kid": (
            "Bearer " + jwt.encode(access_claims(server), key, "RS256"),
            True,
        ),
        "someone else's key, real kid": (
            f"Bearer {mint(other_key, kid, access_claims(server))}",
            True,
        ),
        "ID token as access token": (f"Bearer {id_token}", True),
        "typ JWT, otherwise valid": (
            f"Bearer {mint(key, kid, access_claims(server), 'JWT')}",
            True,
        ),
        "RS512 (not allowed)": (
            "Bearer "
            + jwt.encode(
                access_claims(server), key, "RS512", headers={"kid": kid, "typ": "at+jwt"}
            ),
            True,
        ),
        "crit header": (
            f"Bearer {mint(key, kid, access_claims(server), crit=['exp'], exp=1)}",
            True,
        ),
        "expired": (
            f"Bearer {mint(key, kid, access_claims(server, iat=now - 7200, exp=now - 3600))}",
            True,
        ),
        "not yet valid (nbf)": (
            f"Bearer {mint(key, kid, access_claims(server, nbf=now + 3600))}",
            True,
        ),
        "issued in the future": (
            f"Bearer {mint(key, kid, access_claims(server, iat=now + 3600, exp=now + 7200))}",
            True,
        ),
        "no exp": (f"Bearer {mint(key, kid, access_claims(server, exp=None))}", True),
        "exp as a string": (
            f"Bearer {mint(key, kid, access_claims(server, exp=str(now + 600)))}",
            True,
        ),
        "no sub": (f"Bearer {mint(key, kid, access_claims(server, sub=None))}", True),
        "wrong iss": (
            f"Bearer {mint(key, kid, access_claims(server, iss='https://evil.example.com'))}",
            True,
        ),
        "wrong aud": (
            f"Bearer {mint(key, kid, access_claims(server, aud=['https://api.example.com']))}",
            True,
        ),
        "aud = client id": (
            f"Bearer {mint(key, kid, access_claims(server, aud='test-native'))}",
            True,
        ),
        "tampered payload": (f"Bearer {rhead}.{b64json(tampered_claims)}.{rsig}", True),
        "tampered signature": (f"Bearer {rhead}.{rbody}.{_flip(rsig)}", True),
        "signature of another token": (f"Bearer {rhead}.{rbody}.{sig}", True),
        "garbage": ("Bearer garbage", True),
        "three dots of garbage": ("Bearer a.b.c", True),
        "not base64": ("Bearer !!!.???.***", True),
        "header not JSON": (f"Bearer {b64(b'{not json')}.{body}.{sig}", True),
        "header a JSON list": (f"Bearer {b64json(['RS256'])}.{body}.{sig}", True),
        # json.loads raises RecursionError (not ValueError) on deep nesting: 4 KiB is enough.
        "header deeply nested JSON": (f"Bearer {b64(b'[' * 3000)}.{body}.{sig}", True),
        "payload not JSON": (f"Bearer {head}.{b64(b'[[[')}.{sig}", True),
        "padding in segments": (f"Bearer {head}==.{body}.{sig}", True),
        "bare Bearer": ("Bearer", True),
        "two tokens": (f"Bearer {good} {good}", True),
        "oversized header": ("Bearer " + "a" * 9000, True),
        "oversized JWT": (f"Bearer {head}.{'A' * 9000}.{sig}", True),
        "wrong scheme Basic": ("Basic dXNlcjpwYXNzd29yZA==", False),
        "wrong scheme Token": (f"Token {good}", False),
        "no scheme": (good, False),
    }
    return cases


@pytest.fixture(scope="module")
def attacks(authgear_server: ServerProcess) -> dict[str, tuple[str, bool]]:
    return corpus(authgear_server)


@pytest.fixture(scope="module")
def good_token(authgear_server: ServerProcess) -> str:
    tokens, _ = tokens_for(authgear_server)
    return str(tokens["access_token"])


@pytest.mark.parametrize("kind", ["fastapi_jwt", "flask_jwt"])
def test_attack_corpus_over_http(
    kind: str,
    attacks: dict[str, tuple[str, bool]],
    good_token: str,
    request: pytest.FixtureRequest,
) -> None:
    backend = request.getfixturevalue(kind)
    failures = []
    with httpx2.Client(base_url=backend.url, timeout=10) as http:
        # The real token passes, with the scheme in any case.
        for scheme in ("Bearer", "bearer", "BEARER"):
            r = http.get("/api/me", headers={"authorization": f"{scheme} {good_token}"})
            assert r.status_code == 200, (scheme, r.text)
        for name, (value, has_error) in attacks.items():
            r = http.get("/api/me", headers={"authorization": value})
            challenge = r.headers.get("www-authenticate", "")
            ok = (
                r.status_code == 401
                and challenge.startswith('Bearer realm="api"')
                and (('error="invalid_token"' in challenge) == has_error)
            )
            if not ok:
                failures.append((name, r.status_code, challenge, r.text[:200]))
    assert not failures, failures


@pytest.mark.parametrize("json_parser", ["orjson", "stdlib"])
def test_attack_corpus_verifier_sync_and_async(
    authgear_server: ServerProcess,
    attacks: dict[str, tuple[str, bool]],
    good_token: str,
    json_parser: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both JSON parsers (orjson from the `speedups` extra, the standard library without it)
    refuse the same corpus."""
    import asyncio

    from authgear.backend import _jwt

    if json_parser == "stdlib":
        monkeypatch.setattr(_jwt, "_loads_json", _jwt._loads_stdlib)
    else:
        assert _jwt._loads_json is not _jwt._loads_stdlib  # the dev extra installs orjson
    verifier = JWTVerifier(authgear_server.url)
    assert verifier.verify(good_token).sub
    for name, (value, has_error) in attacks.items():
        request = SimpleRequest({"Authorization": value.strip()})
        for attempt in ("sync", "async"):
            try:
                if attempt == "sync":
                    verifier.authenticate(request)
                else:
                    asyncio.run(verifier.authenticate_async(request))
            except AuthError as e:
                expected = InvalidToken if has_error else MissingCredentials
                assert isinstance(e, expected), (name, attempt, e)
                assert e.status_code == 401
            else:
                pytest.fail(f"{name} ({attempt}) was accepted")
    verifier.close()


def test_verifier_never_fetches_keys_a_token_names(
    authgear_server: ServerProcess, attacks: object
) -> None:
    """jku/x5u/jwk header parameters are ignored: a token signed by the attacker's own key,
    which it points at, is still refused."""
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from jwt.algorithms import RSAAlgorithm

    jwk = RSAAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    token = mint(
        attacker,
        "attacker",
        access_claims(authgear_server),
        jku="http://127.0.0.1:1/jwks",
        jwk={**jwk, "kid": "attacker"},
    )
    verifier = JWTVerifier(authgear_server.url)
    with pytest.raises(InvalidToken):
        verifier.verify(token)
    verifier.close()
