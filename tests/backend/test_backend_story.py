"""The seed's story end to end: SDK login → fetch /api/me → revoke → 401 → NO_SESSION.

Real processes throughout: our server (``authgear_server``), the example backends
(``examples/fastapi_backend.py`` and ``examples/flask_backend.py``) on free loopback ports, and
the SDK signed in through the real login form over HTTP.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from backend_support import sdk_signed_in

from agtest.server import NATIVE, ServerProcess
from authgear import SessionState, SessionStateChangeReason


def revoke_on_server(server: ServerProcess, refresh_token: str) -> None:
    r = httpx2.post(
        server.url + "/oauth2/revoke", data={"token": refresh_token, "client_id": NATIVE}
    )
    assert r.status_code == 200


@pytest.mark.parametrize("kind", ["fastapi", "flask"])
def test_seed_story_resolver_and_jwt(
    kind: str, authgear_server: ServerProcess, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    resolver_backend = request.getfixturevalue(f"{kind}_resolver")
    jwt_backend = request.getfixturevalue(f"{kind}_jwt")
    ag, sub, _email = sdk_signed_in(authgear_server, tmp_path)
    assert ag.session_state is SessionState.AUTHENTICATED

    # Both backends know who is calling.
    for backend, source in ((resolver_backend, "resolver"), (jwt_backend, "jwt")):
        r = ag.fetch("GET", backend.url + "/api/me")
        assert r.status_code == 200, r.text
        me = r.json()
        assert me["sub"] == sub
        assert me["source"] == source
        assert me["is_anonymous"] is False
    jwt_me = ag.fetch("GET", jwt_backend.url + "/api/me").json()
    assert jwt_me["client_id"] == NATIVE
    assert "https://authgear.com/scopes/full-access" in jwt_me["scopes"]

    # Without a session: 401 with a bare Bearer challenge.
    r = httpx2.get(resolver_backend.url + "/api/me")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="api"'

    # The session is revoked on the server (as an admin or another device would).
    access_token = ag.access_token
    assert access_token
    record = ag.token_storage.load(ag.storage_key)
    assert record is not None and record.refresh_token
    revoke_on_server(authgear_server, record.refresh_token)
    bearer = {"authorization": f"Bearer {access_token}"}

    # Resolver mode: refused at once.
    r = httpx2.get(resolver_backend.url + "/api/me", headers=bearer)
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    # JWT mode: the signature and claims are still valid, so the token is accepted until it
    # expires (documented trade-off in docs/backend.md).
    r = httpx2.get(jwt_backend.url + "/api/me", headers=bearer)
    assert r.status_code == 200
    assert r.json()["sub"] == sub

    # The SDK sees the 401 (it tries one refresh, which the server refuses) and ends in
    # NO_SESSION, as the seed's "Handle revoked sessions" describes.
    r = ag.fetch("GET", resolver_backend.url + "/api/me")
    assert r.status_code == 401
    assert ag.session_state is SessionState.NO_SESSION
    assert ag.session_state_reason is SessionStateChangeReason.INVALID
    # And the next call goes out without credentials.
    r = ag.fetch("GET", jwt_backend.url + "/api/me")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="api"'


def test_optional_user_and_public_routes(
    fastapi_resolver: object, authgear_server: ServerProcess, tmp_path: Path
) -> None:
    url = fastapi_resolver.url  # type: ignore[attr-defined]
    assert httpx2.get(url + "/api/public").status_code == 200
    assert httpx2.get(url + "/api/hello").json() == {"message": "hello, stranger"}
    ag, sub, _ = sdk_signed_in(authgear_server, tmp_path)
    assert ag.fetch("GET", url + "/api/hello").json() == {"message": f"hello, {sub}"}
    # A present but invalid token on an optional route is still a 401 (the client must know).
    r = httpx2.get(url + "/api/hello", headers={"authorization": "Bearer nope"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
