"""JWTVerifier is strict about keys, lifetimes and where keys come from (issue 18.9), and tells
a misconfiguration from an outage (issue 17.5).

A stand-in Authgear (``DocServer``, a real HTTP server on a loopback port) serves what the real
server never would: weak keys, absurd lifetimes, a wrong issuer, oversized or stalling
documents.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import warnings
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from backend_support import DocServer, b64, b64json
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from authgear.backend import (
    BackendUnavailable,
    ConfigurationError,
    InvalidToken,
    JWTVerifier,
    ResolverClient,
)
from authgear.backend._jwks import MAX_DOCUMENT


def jwk_of(key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = key.public_key()
    algo = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    jwk = algo.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", **({"alg": alg} if alg else {})}


@pytest.fixture
def docs() -> Iterator[DocServer]:
    server = DocServer()
    yield server
    server.stop()


STRONG = rsa.generate_private_key(public_exponent=65537, key_size=2048)
WEAK = rsa.generate_private_key(public_exponent=65537, key_size=1024)
K1 = ec.generate_private_key(ec.SECP256K1())


def claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": issuer, "aud": [issuer], "sub": "u1", "iat": now, "exp": now + 600}
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def token(key: Any, kid: str, issuer: str, alg: str = "RS256", **overrides: Any) -> str:
    with warnings.catch_warnings():  # PyJWT warns about the 1024-bit key we test with
        warnings.simplefilter("ignore")
        return jwt.encode(
            claims(issuer, **overrides), key, algorithm=alg, headers={"kid": kid, "typ": "at+jwt"}
        )


def verifier_for(docs: DocServer, **options: Any) -> JWTVerifier:
    docs.routes["/jwks"] = docs.routes.get("/jwks") or ("json", {"keys": []})
    return JWTVerifier(issuer=docs.url, jwks_uri=docs.url + "/jwks", **options)


def test_attack_token_signed_by_1024_bit_rsa_key_is_refused(
    docs: DocServer, caplog: pytest.LogCaptureFixture
) -> None:
    docs.routes["/jwks"] = ("json", {"keys": [jwk_of(WEAK, "weak"), jwk_of(STRONG, "strong")]})
    verifier = verifier_for(docs)
    with (
        caplog.at_level(logging.WARNING, "authgear.backend"),
        pytest.raises(InvalidToken, match="too weak: an RSA key of 1024 bits"),
    ):
        verifier.verify(token(WEAK, "weak", docs.url))
    assert verifier.verify(token(STRONG, "strong", docs.url)).sub == "u1"
    assert "refusing JWKS key 'weak'" in caplog.text
    # A JWKS of weak keys only: still an invalid token (401), not an outage (503).
    docs.routes["/jwks"] = ("json", {"keys": [jwk_of(WEAK, "weak")]})
    only_weak = verifier_for(docs)
    for attempt in (only_weak.verify, lambda t: asyncio.run(only_weak.verify_async(t))):
        with pytest.raises(InvalidToken, match="too weak"):
            attempt(token(WEAK, "weak", docs.url))


def test_attack_token_signed_on_a_non_nist_curve_is_refused(docs: DocServer) -> None:
    # secp256k1 passes for ES256 in careless libraries: the same size, another curve.
    docs.routes["/jwks"] = ("json", {"keys": [jwk_of(K1, "k1")]})
    verifier = verifier_for(docs, algorithms=("ES256",))
    signing_input = f"{b64json({'alg': 'ES256', 'kid': 'k1', 'typ': 'at+jwt'})}."
    signing_input += b64json(claims(docs.url))
    r, s = decode_dss_signature(K1.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    forged = f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    with pytest.raises(InvalidToken, match="too weak: an EC key on secp256k1"):
        verifier.verify(forged)


def test_attack_token_with_exp_2_pow_40_is_refused_with_max_token_age(docs: DocServer) -> None:
    docs.routes["/jwks"] = ("json", {"keys": [jwk_of(STRONG, "strong")]})
    forever = token(STRONG, "strong", docs.url, exp=2**40)
    strict = verifier_for(docs, max_token_age=3600)
    with pytest.raises(InvalidToken, match="lifetime is longer than max_token_age"):
        strict.verify(forever)
    # Issued two hours ago, still "valid" for ten minutes: older than the maximum age.
    old = token(STRONG, "strong", docs.url, iat=int(time.time()) - 7200)
    with pytest.raises(InvalidToken, match="max_token_age"):
        strict.verify(old)
    assert strict.verify(token(STRONG, "strong", docs.url)).sub == "u1"
    # Without the option (the default) the signature is what counts.
    assert verifier_for(docs).verify(forever).sub == "u1"
    with pytest.raises(ConfigurationError):
        verifier_for(docs, max_token_age=0)


def test_attack_plain_http_keys_from_a_remote_host_are_refused(docs: DocServer) -> None:
    for endpoint in ("http://authgear.example.com", "http://10.0.0.5:3000", "ftp://x.example"):
        with pytest.raises(ConfigurationError):
            JWTVerifier(endpoint)
    with pytest.raises(ConfigurationError, match="plain http"):
        JWTVerifier(issuer="https://a.example", jwks_uri="http://a.example/jwks")
    # Loopback and https are fine; the opt-out is explicit.
    for endpoint in ("http://127.0.0.1:3000", "http://localhost:3000", "http://[::1]:3000"):
        JWTVerifier(endpoint).close()
    JWTVerifier("https://authgear.example.com").close()
    JWTVerifier("http://authgear.internal:3000", allow_insecure_http=True).close()
    # Discovery on loopback pointing at a plain-http JWKS elsewhere: a configuration error,
    # answered as such (500), not as "try again later".
    docs.routes["/.well-known/openid-configuration"] = (
        "json",
        {"issuer": docs.url, "jwks_uri": "http://keys.example.com/jwks"},
    )
    verifier = JWTVerifier(docs.url)
    with pytest.raises(ConfigurationError, match="plain http") as raised:
        verifier.verify(token(STRONG, "strong", docs.url))
    assert raised.value.status_code == 500
    assert raised.value.body()["error"] == "server_error"
    assert "keys.example.com" not in raised.value.body_bytes().decode()


@pytest.mark.parametrize(
    ("route", "what"),
    [
        (("stall-after", (None, MAX_DOCUMENT + 512 * 1024)), "streamed past the cap"),
        (("stall-after", (50 * MAX_DOCUMENT, 0)), "declared over the cap"),
    ],
)
def test_attack_oversized_jwks_is_refused_without_downloading_it(
    docs: DocServer, caplog: pytest.LogCaptureFixture, route: tuple[str, Any], what: str
) -> None:
    """The server stalls after what it sent: a verifier that read the whole document would
    wait for the rest and time out; one that stops at the cap fails at once, on the size."""
    docs.routes["/jwks"] = route
    verifier = verifier_for(docs, timeout=3)
    with caplog.at_level(logging.WARNING, "authgear.backend"), pytest.raises(BackendUnavailable):
        verifier.verify(token(STRONG, "strong", docs.url))
    assert f"larger than {MAX_DOCUMENT} bytes" in caplog.text, (what, caplog.text)
    assert "Timeout" not in caplog.text
    caplog.clear()
    async_verifier = verifier_for(docs, timeout=3)
    with caplog.at_level(logging.WARNING, "authgear.backend"), pytest.raises(BackendUnavailable):
        asyncio.run(async_verifier.verify_async(token(STRONG, "strong", docs.url)))
    assert f"larger than {MAX_DOCUMENT} bytes" in caplog.text, what


def test_issuer_mismatch_is_a_configuration_error_logged_once(
    docs: DocServer, caplog: pytest.LogCaptureFixture
) -> None:
    docs.routes["/.well-known/openid-configuration"] = (
        "json",
        {"issuer": "https://other.example", "jwks_uri": docs.url + "/jwks"},
    )
    docs.routes["/jwks"] = ("json", {"keys": [jwk_of(STRONG, "strong")]})
    verifier = JWTVerifier(docs.url, refetch_cooldown=0)
    with caplog.at_level(logging.WARNING, "authgear.backend"):
        with pytest.raises(ConfigurationError, match="issuer"):
            verifier.prefetch()
        for _ in range(5):
            with pytest.raises(
                ConfigurationError, match=re.escape("pass issuer='https://other.example'")
            ):
                verifier.verify(token(STRONG, "strong", docs.url))
        with pytest.raises(ConfigurationError):
            asyncio.run(verifier.verify_async(token(STRONG, "strong", docs.url)))
    assert caplog.text.count("says the issuer is") == 1, caplog.text
    assert docs.hits["/.well-known/openid-configuration"] >= 6  # re-checked, logged once
    # Fixed on the server side: the verifier recovers by itself.
    docs.routes["/.well-known/openid-configuration"] = (
        "json",
        {"issuer": docs.url, "jwks_uri": docs.url + "/jwks"},
    )
    assert verifier.verify(token(STRONG, "strong", docs.url)).sub == "u1"


def test_jwks_outage_is_logged_once_and_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    docs = DocServer()
    port = docs.port
    docs.routes["/jwks"] = ("json", {"keys": [jwk_of(STRONG, "strong")]})
    verifier = JWTVerifier(
        issuer=docs.url, jwks_uri=docs.url + "/jwks", jwks_ttl=0, refetch_cooldown=0
    )
    good = token(STRONG, "strong", docs.url)
    assert verifier.verify(good).sub == "u1"
    docs.stop()
    with caplog.at_level(logging.WARNING, "authgear.backend"):
        for _ in range(10):
            assert verifier.verify(good).sub == "u1"  # stale keys keep serving
        assert caplog.text.count("cannot load the JWKS") == 1, caplog.text
        back = DocServer(port)
        try:
            back.routes["/jwks"] = ("json", {"keys": [jwk_of(STRONG, "strong")]})
            for _ in range(5):
                assert verifier.verify(good).sub == "u1"
        finally:
            back.stop()
    assert caplog.text.count("the JWKS is reachable again") == 1, caplog.text
    assert caplog.text.count("cannot load the JWKS") == 1


def test_resolver_outage_is_logged_once_and_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = DocServer()
    port = probe.port
    probe.stop()
    resolver = ResolverClient(resolver_url=f"http://127.0.0.1:{port}/resolve", timeout=2)
    with caplog.at_level(logging.WARNING, "authgear.backend"):
        for _ in range(5):
            with pytest.raises(BackendUnavailable):
                resolver.resolve("Bearer x")
        assert caplog.text.count("unreachable") == 1, caplog.text
        docs = DocServer(port)
        try:
            docs.routes["/resolve"] = (
                "headers",
                {"x-authgear-session-valid": "true", "x-authgear-user-id": "u1"},
            )
            for _ in range(3):
                assert resolver.resolve("Bearer x").sub == "u1"
        finally:
            docs.stop()
    assert caplog.text.count("reachable again") == 1, caplog.text
    assert caplog.text.count("unreachable") == 1
    resolver.close()


def test_header_cache_does_not_change_what_is_refused(docs: DocServer) -> None:
    """A header segment remembered from a good token is only a parse shortcut: a token with the
    same header and a bad signature or bad claims is refused as before."""
    docs.routes["/jwks"] = ("json", {"keys": [jwk_of(STRONG, "strong")]})
    verifier = verifier_for(docs)
    good = token(STRONG, "strong", docs.url)
    assert verifier.verify(good).sub == "u1"
    head = good.split(".")[0]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = token(other, "strong", docs.url, sub="admin")
    assert forged.split(".")[0] == head
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(forged)
    expired = token(STRONG, "strong", docs.url, iat=1, exp=2)
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(expired)
    body = good.split(".")[1]
    with pytest.raises(InvalidToken):
        verifier.verify(f"{b64json({'alg': 'none', 'kid': 'strong'})}.{body}.")


def test_fast_user_constructor_builds_the_same_user() -> None:
    """The verifier's hot path builds users with new_user(); it must be the dataclass's own."""
    import dataclasses

    from authgear.backend import AuthenticatedUser
    from authgear.backend._types import new_user

    values = dict(
        sub="u1",
        roles=("admin",),
        is_verified=True,
        is_anonymous=False,
        can_reauthenticate=True,
        client_id="c1",
        scopes=frozenset({"openid"}),
        authenticated_at=1,
        expires_at=2,
        amr=("pwd",),
        source="jwt",
        credential="bearer",
        claims={"sub": "u1"},
    )
    assert [f.name for f in dataclasses.fields(AuthenticatedUser)] == list(values)
    fast, slow = new_user(*values.values()), AuthenticatedUser(**values)  # type: ignore[arg-type]
    assert fast == slow and fast.as_dict() == slow.as_dict() and fast.claims == slow.claims
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.sub = "someone else"  # type: ignore[misc]
