"""JWKS behaviour against the real server: key rotation, refetch storms, stale keys.

Fetches are counted by the verifier (``jwks_fetches``) and, independently, by the real HTTP
client it is given: an event hook counts each JWKS request as it goes out to the server.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import uuid

import httpx2
import jwt
import pytest
from backend_support import access_claims, mint, signing_keys

from agtest.server import AUTHGEAR, ServerProcess, tokens_for
from authgear.backend import (
    BackendUnavailable,
    InvalidToken,
    JWTVerifier,
)


class JWKSRequests:
    """A real HTTP client for a verifier that counts the JWKS requests it sends."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self.client = httpx2.Client(timeout=5.0, event_hooks={"request": [self._sent]})

    def _sent(self, request: httpx2.Request) -> None:
        if request.url.path == "/oauth2/jwks":
            with self._lock:
                self.count += 1


def rotate_keys(server: ServerProcess) -> str:
    """`authgear keys rotate` on the running server's data: the new key is published at once
    and signs after two key-refresh intervals (1 s in these tests)."""
    out = subprocess.run(
        [AUTHGEAR, "keys", "rotate", "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()[3].rstrip(":")


def retire_key(server: ServerProcess, kid: str) -> None:
    """What the passage of time does: the old key's tokens have all expired."""
    server.query("UPDATE signing_keys SET retire_at = ? WHERE kid = ?", int(time.time()) - 1, kid)


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def test_real_key_rotation(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.config["key_refresh_interval"] = 1
    server.start()
    old_token = tokens_for(server)[0]["access_token"]
    old_kid = kid_of(old_token)
    requests = JWKSRequests()
    verifier = JWTVerifier(
        server.url, jwks_ttl=1.0, refetch_cooldown=0.2, http_client=requests.client
    )
    assert verifier.verify(old_token).sub
    assert verifier.jwks_fetches == 1

    new_kid = rotate_keys(server)
    time.sleep(2.5)  # published, then signing
    new_token = tokens_for(server)[0]["access_token"]
    assert kid_of(new_token) == new_kid
    # The unknown kid makes the verifier refetch once; the old key is still served.
    assert verifier.verify(new_token).sub
    assert verifier.jwks_fetches == 2
    assert verifier.verify(old_token).sub
    assert verifier.jwks_fetches == 2
    assert requests.count == 2

    # Retire the old key: once the cached JWKS is older than its TTL, the verifier refreshes
    # and tokens signed by the retired key are refused.
    retire_key(server, old_kid)
    time.sleep(1.5)  # the server re-reads its keys; the verifier's cache gets stale
    assert verifier.verify(new_token).sub  # a stale cache: refreshed in this call
    assert verifier.jwks_fetches == 3
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier.verify(old_token)
    assert requests.count == verifier.jwks_fetches  # every fetch went out, once
    verifier.close()
    requests.client.close()


@pytest.mark.parametrize("fresh_server", ["sqlite"], indirect=True)
def test_unknown_kid_storm_threads_and_tasks(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.start()
    kid, key, _ = signing_keys(server)[0]
    good = mint(key, kid, access_claims(server))
    storm = [mint(key, str(uuid.uuid4()), access_claims(server)) for _ in range(64)]
    cooldown = 1.0
    requests = JWKSRequests()
    verifier = JWTVerifier(server.url, refetch_cooldown=cooldown, http_client=requests.client)
    verifier.prefetch()
    assert requests.count == 1

    # 32 threads hammer unknown kids for 2.5 s: at most one fetch per cooldown.
    stop = time.monotonic() + 2.5
    refused = [0] * 32
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            while time.monotonic() < stop:
                for token in storm:
                    try:
                        verifier.verify(token)
                    except InvalidToken:
                        refused[i] += 1
                assert verifier.verify(good).sub
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    started = time.monotonic()
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert not errors
    assert sum(refused) > 1000
    during = requests.count - 1
    assert 1 <= during <= 1 + int(elapsed / cooldown), (during, elapsed)
    assert verifier.jwks_fetches == requests.count

    # 500 concurrent asyncio tasks with unknown kids, after the cooldown: one fetch (the async
    # path uses a client of its own, so the verifier's counter counts it).
    time.sleep(cooldown)
    before = verifier.jwks_fetches

    async def tasks() -> list[BaseException | object]:
        return await asyncio.gather(
            *(verifier.verify_async(storm[i % len(storm)]) for i in range(500)),
            return_exceptions=True,
        )

    results = asyncio.run(tasks())
    assert all(isinstance(r, InvalidToken) for r in results)
    assert verifier.jwks_fetches - before == 1
    assert requests.count == before  # none of them went through the sync client
    verifier.close()
    requests.client.close()


@pytest.mark.parametrize("fresh_server", ["sqlite"], indirect=True)
def test_stale_keys_serve_when_the_server_is_down(fresh_server: ServerProcess) -> None:
    server = fresh_server
    server.start()
    token = tokens_for(server)[0]["access_token"]
    verifier = JWTVerifier(server.url, jwks_ttl=0.3, refetch_cooldown=0.1)
    assert verifier.verify(token).sub
    server.stop()
    time.sleep(0.4)
    # The refresh fails; the known key keeps verifying (sync and async).
    assert verifier.verify(token).sub
    assert asyncio.run(verifier.verify_async(token)).sub
    assert verifier.jwks_fetches >= 2
    # An unknown kid is still just an invalid token, not an outage.
    _kid, key, _ = signing_keys(server)[0]
    with pytest.raises(InvalidToken):
        verifier.verify(mint(key, str(uuid.uuid4()), access_claims(server)))
    # A verifier that never got keys reports the outage (adapters answer 503).
    cold = JWTVerifier(server.url, refetch_cooldown=0.1)
    with pytest.raises(BackendUnavailable):
        cold.verify(token)
    with pytest.raises(BackendUnavailable):
        asyncio.run(cold.verify_async(token))
    # Back up: the next fetch after the cooldown succeeds.
    server.start()
    time.sleep(0.15)
    assert cold.verify(token).sub
    verifier.close()
    cold.close()


def test_verified_token_cache_rechecks_expiry(authgear_server: ServerProcess) -> None:
    """A cached verification is only as good as the token's exp (and the JWKS TTL)."""
    _kid, key, _ = signing_keys(authgear_server)[0]
    now = [time.time()]
    verifier = JWTVerifier(authgear_server.url, leeway=0, clock=lambda: now[0])
    token = mint(key, _kid, access_claims(authgear_server, exp=int(now[0]) + 60))
    assert verifier.verify(token).sub == "forged-user"
    assert verifier.verify(token).sub == "forged-user"  # a cache hit
    now[0] += 61
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)
    with pytest.raises(InvalidToken, match="expired"):
        asyncio.run(verifier.verify_async(token))
    verifier.close()


def test_key_dropped_mid_verification_is_not_cached(fresh_server: ServerProcess) -> None:
    """A token whose verification began with a key that a concurrent JWKS refresh then dropped
    is not remembered: presented again, it is checked against the new key set and refused."""
    server = fresh_server
    server.config["key_refresh_interval"] = 1
    server.start()
    old_token = tokens_for(server)[0]["access_token"]
    old_kid = kid_of(old_token)
    calls_until_refresh = [-1]

    def clock() -> float:
        # verify(old_token) reads the clock in the key lookup, then in the claim check. At the
        # second read, another caller's refresh completes, as a thread's could at that moment.
        calls_until_refresh[0] -= 1
        if calls_until_refresh[0] == 0:
            verifier.verify(new_token)  # an unknown kid: refetched, the old key is gone
        return time.time()

    verifier = JWTVerifier(server.url, refetch_cooldown=0, clock=clock)
    verifier.prefetch()  # knows the old key only
    rotate_keys(server)
    time.sleep(2.5)  # published, then signing
    new_token = tokens_for(server)[0]["access_token"]
    retire_key(server, old_kid)
    time.sleep(1.5)  # the server re-reads its keys and stops publishing the old one
    calls_until_refresh[0] = 2
    assert verifier.verify(old_token).sub  # in flight when its key left: accepted this once
    assert verifier.jwks_fetches == 2
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier.verify(old_token)
    verifier.close()
