"""JWT access tokens without rows (issue 11 points 1 and 6), through real HTTP, on SQLite and
PostgreSQL.

A refresh writes nothing (rotation off); userinfo and the resolver trust a token only once our
signature checks out, and then ask its session (``sid``) on every use, so every way of ending
a session or revoking a token still takes effect at once. The attacks: an ID token, a token
signed by another key under our kid, ``alg: none``, an HS256 token keyed with our public key,
a token whose claims were edited, and a replayed code, each presented to userinfo and the
resolver.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agtest.server import (
    CONFIDENTIAL_SECRET,
    NATIVE_REDIRECT,
    OPAQUE,
    Flow,
    ServerProcess,
    exchange,
    free_port,
    login,
    new_email,
    refresh,
    server_config,
    tokens_for,
)
from agtest.services import Postgres

STILL = "still-client"  # public, refresh tokens not rotated: a refresh changes nothing
OPAQUE_OFFLINE = "opaque-offline"
M2M = "state-m2m"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    port = free_port()
    config = server_config(port)
    secret_hash = next(c for c in config["clients"] if "client_secret_hash" in c)[
        "client_secret_hash"
    ]
    config["clients"] = [
        *config["clients"],
        {"id": STILL, "redirect_uris": [NATIVE_REDIRECT], "refresh_token_rotation": False},
        {
            "id": OPAQUE_OFFLINE,
            "redirect_uris": [NATIVE_REDIRECT],
            "access_token_format": "opaque",
            "refresh_token_rotation": False,
        },
        {
            "id": M2M,
            "type": "confidential",
            "client_secret_hash": secret_hash,
            "redirect_uris": ["https://m2m.example.com/cb"],
            "grant_types": ["client_credentials"],
            "allowed_scopes": ["api:read"],
        },
    ]
    if request.param == "postgresql":
        pg: Postgres = request.getfixturevalue("postgres")
        config["database_url"] = pg.create_database(f"ats_{secrets.token_hex(6)}")
    proc = ServerProcess(tmp_path_factory.mktemp("ats"), port, config)
    proc.start()
    yield proc
    proc.stop()


def _db(server: ServerProcess) -> sqlite3.Connection | None:
    if "database_url" in server.config:
        return None
    return sqlite3.connect(server.data_dir / "authgear.db")


def _count(server: ServerProcess, table: str) -> int | None:
    db = _db(server)
    if db is None:
        return None
    with db:
        n = int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    db.close()
    return n


def _userinfo(server: ServerProcess, token: str) -> int:
    r = httpx2.get(server.url + "/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"})
    return r.status_code


def _resolver(server: ServerProcess, token: str) -> str:
    r = httpx2.get(server.url + "/_resolver/resolve", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    return r.headers.get("x-authgear-session-valid", "absent")


def _accepted(server: ServerProcess, token: str) -> bool:
    status, valid = _userinfo(server, token), _resolver(server, token)
    assert (status == 200) == (valid == "true"), (status, valid)  # both agree, always
    return status == 200


def _revoke(server: ServerProcess, token: str, **extra: str) -> None:
    r = httpx2.post(server.url + "/oauth2/revoke", data={"token": token, **extra})
    assert r.status_code == 200, r.text


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header = jwt.get_unverified_header(token)
    return header, jwt.decode(token, options={"verify_signature": False})


# -- no write per refresh ----------------------------------------------------------------------


def test_refreshes_write_nothing_and_every_token_is_accepted(server: ServerProcess) -> None:
    tokens, _ = tokens_for(server, STILL)
    grant_id = tokens["refresh_token"].split(".")[0]
    db = _db(server)
    before = None
    if db is not None:
        with db:
            before = db.execute("SELECT * FROM offline_grants WHERE id = ?", (grant_id,)).fetchall()
    access = []
    for _ in range(12):
        r = refresh(server, tokens["refresh_token"], STILL)
        assert r.status_code == 200, r.text
        access.append(r.json()["access_token"])
    assert len(set(access)) == 12
    assert all(_accepted(server, a) for a in access)
    # Every access token carries its grant's id; none of them left a row behind.
    assert {_parts(a)[1]["sid"] for a in access} == {grant_id}
    if db is not None:
        with db:
            after = db.execute("SELECT * FROM offline_grants WHERE id = ?", (grant_id,)).fetchall()
            rows = db.execute("SELECT COUNT(*) FROM access_tokens").fetchone()[0]
        db.close()
        assert after == before  # the grant row did not change either (activity: once a minute)
        assert rows == 0


def test_ending_the_grant_refuses_all_its_access_tokens_at_once(server: ServerProcess) -> None:
    tokens, _ = tokens_for(server, STILL)
    access = [tokens["access_token"]]
    access += [refresh(server, tokens["refresh_token"], STILL).json()["access_token"]]
    other, _ = tokens_for(server, STILL)
    assert all(_accepted(server, a) for a in access)
    _revoke(server, tokens["refresh_token"])
    assert not any(_accepted(server, a) for a in access)
    assert _accepted(server, other["access_token"])  # another grant: untouched


def test_revoking_one_access_token_refuses_only_that_token(server: ServerProcess) -> None:
    tokens, _ = tokens_for(server, STILL)
    first = tokens["access_token"]
    second = refresh(server, tokens["refresh_token"], STILL).json()["access_token"]
    before = _count(server, "revoked_tokens")
    # Twice at once: both are 200, and the token is listed once.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: _revoke(server, first), range(2)))
    assert not _accepted(server, first)
    assert _accepted(server, second)
    r = refresh(server, tokens["refresh_token"], STILL)
    assert r.status_code == 200 and _accepted(server, r.json()["access_token"])
    if before is not None:
        assert _count(server, "revoked_tokens") == before + 1


def test_another_clients_revocation_of_an_access_token_does_nothing(server: ServerProcess) -> None:
    tokens, _ = tokens_for(server, STILL)
    r = httpx2.post(
        server.url + "/oauth2/revoke",
        data={
            "token": tokens["access_token"],
            "client_id": M2M,
            "client_secret": CONFIDENTIAL_SECRET,
        },
    )
    assert r.status_code == 200
    assert _accepted(server, tokens["access_token"])


def test_a_replayed_code_revokes_the_access_token_of_its_first_exchange(
    server: ServerProcess,
) -> None:
    # Without offline_access the token belongs to the browser session (no grant to end).
    cb, flow, browser = login(
        server, new_email(), PASSWORD, flow=Flow.new(STILL), signup=True, scope="openid"
    )
    browser.close()
    first = exchange(server, cb["code"], flow)
    assert first.status_code == 200, first.text
    access = first.json()["access_token"]
    assert _accepted(server, access)
    assert exchange(server, cb["code"], flow).json()["error"] == "invalid_grant"
    assert not _accepted(server, access)


# -- what is not an access token of ours -------------------------------------------------------


def test_an_id_token_is_not_an_access_token(server: ServerProcess) -> None:
    tokens, _ = tokens_for(server, STILL)
    assert "sid" in _parts(tokens["id_token"])[1]
    assert not _accepted(server, tokens["id_token"])


def test_forged_and_edited_tokens_are_refused(server: ServerProcess) -> None:
    tokens, _ = tokens_for(server, STILL)
    victim, _ = tokens_for(server, STILL)
    header, claims = _parts(tokens["access_token"])
    assert _accepted(server, tokens["access_token"])
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = httpx2.get(server.url + "/oauth2/jwks").json()
    public_pem = jwt.PyJWK(jwks["keys"][0]).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = _b64(json.dumps(claims).encode())
    none_head = _b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}).encode())
    hs_head = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}).encode())
    hs_sig = _b64(hmac.new(public_pem, f"{hs_head}.{body}".encode(), "sha256").digest())
    victim_claims = _parts(victim["access_token"])[1]
    edited = {**claims, "sub": victim_claims["sub"], "sid": victim_claims["sid"]}
    head, _, sig = tokens["access_token"].split(".")
    forged = [
        # Another key, our kid.
        jwt.encode(
            claims, stranger, algorithm="RS256", headers={"kid": header["kid"], "typ": "at+jwt"}
        ),
        f"{none_head}.{body}.",  # alg none
        f"{hs_head}.{body}.{hs_sig}",  # HS256 keyed with our public key (algorithm confusion)
        # Our signature, the victim's session and subject in the claims.
        f"{head}.{_b64(json.dumps(edited).encode())}.{sig}",
        tokens["access_token"] + "A",  # a byte more in the signature segment
    ]
    for token in forged:
        assert not _accepted(server, token), token[:40]
    assert _accepted(server, tokens["access_token"]) and _accepted(server, victim["access_token"])


def test_a_token_for_another_users_session_is_refused_even_when_signed(
    server: ServerProcess,
) -> None:
    """Tokens are signed by us, so this needs our key: the server must still check that the
    session named by ``sid`` belongs to ``sub`` and to the token's client (defence in depth
    against a key used elsewhere, or a bug that mixes claims)."""
    db = _db(server)
    if db is None:
        pytest.skip("reads the signing key from the SQLite database")
    with db:
        pem = db.execute(
            "SELECT private_pem FROM signing_keys WHERE retire_at IS NULL ORDER BY created_at DESC"
        ).fetchone()[0]
        kid = db.execute(
            "SELECT kid FROM signing_keys WHERE retire_at IS NULL ORDER BY created_at DESC"
        ).fetchone()[0]
    db.close()
    if not pem.startswith("-----BEGIN"):
        pytest.skip("signing keys are encrypted at rest in this configuration")
    mine, _ = tokens_for(server, STILL)
    theirs, _ = tokens_for(server, STILL)
    _, claims = _parts(mine["access_token"])
    their_sid = _parts(theirs["access_token"])[1]["sid"]
    now = int(time.time())
    for edit in (
        {"sid": their_sid},  # my subject, their session
        {"client_id": OPAQUE},  # my session, as another client's token
        {"sid": claims["sid"], "sub": "no-such-user"},
    ):
        token = jwt.encode(
            {**claims, **edit, "iat": now, "exp": now + 60},
            pem,
            algorithm="RS256",
            headers={"kid": kid, "typ": "at+jwt"},
        )
        assert not _accepted(server, token), edit
    ok = jwt.encode(
        {**claims, "iat": now, "exp": now + 60},
        pem,
        algorithm="RS256",
        headers={"kid": kid, "typ": "at+jwt"},
    )
    assert _accepted(server, ok)  # the harness signs correctly: the edits were the reason


def test_a_session_past_its_expiry_refuses_its_tokens(server: ServerProcess) -> None:
    db = _db(server)
    if db is None:
        pytest.skip("moves a grant's expiry in the SQLite database")
    tokens, _ = tokens_for(server, STILL)
    assert _accepted(server, tokens["access_token"])
    grant_id = tokens["refresh_token"].split(".")[0]
    with db:
        db.execute(
            "UPDATE offline_grants SET expires_at = ? WHERE id = ?",
            (int(time.time()) - 1, grant_id),
        )
    db.close()
    assert not _accepted(server, tokens["access_token"])


# -- opaque tokens and client tokens -----------------------------------------------------------


def test_opaque_tokens_keep_their_rows_and_end_with_their_grant(server: ServerProcess) -> None:
    tokens, _ = tokens_for(server, OPAQUE_OFFLINE)
    assert tokens["access_token"].count(".") == 0
    second = refresh(server, tokens["refresh_token"], OPAQUE_OFFLINE).json()["access_token"]
    assert _accepted(server, tokens["access_token"]) and _accepted(server, second)
    db = _db(server)
    if db is not None:
        grant_id = tokens["refresh_token"].split(".")[0]
        with db:
            n = db.execute("SELECT COUNT(*) FROM access_tokens WHERE session_id = ?", (grant_id,))
            assert n.fetchone()[0] == 2
        db.close()
    _revoke(server, tokens["refresh_token"])
    assert not _accepted(server, tokens["access_token"]) and not _accepted(server, second)


def test_a_revoked_client_credentials_token_is_refused(server: ServerProcess) -> None:
    r = httpx2.post(
        server.url + "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": M2M,
            "client_secret": CONFIDENTIAL_SECRET,
        },
    )
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]

    def client_valid() -> str:
        h = httpx2.get(
            server.url + "/_resolver/resolve", headers={"Authorization": f"Bearer {token}"}
        )
        return h.headers.get("x-authgear-client-valid", "absent")

    assert client_valid() == "true"
    db = _db(server)
    if db is not None:  # a JWT client token leaves no row either
        with db:
            n = db.execute("SELECT COUNT(*) FROM access_tokens WHERE client_id = ?", (M2M,))
            assert n.fetchone()[0] == 0
        db.close()
    _revoke(server, token, client_id=M2M, client_secret=CONFIDENTIAL_SECRET)
    assert client_valid() == "absent"
    assert _userinfo(server, token) == 401
