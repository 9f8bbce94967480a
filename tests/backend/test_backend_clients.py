"""A client's own token (client_credentials) is never a user (issue 9.4).

The server marks it (``gty: client-credentials``, ``sub`` = the client id, no user claims), the
resolver never answers it as a session, and every authenticator and adapter refuses it where a
user is expected; with ``allow_clients=True`` it becomes an ``AuthenticatedClient`` that only
``require_client``/``require_principal`` accept. The attack: a machine token carrying
``https://authgear.com/scopes/full-access`` against the example's ``/api/write``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx2
import jwt
import pytest
from backend_support import (
    FULL_ACCESS,
    BackendProcess,
    client_token,
    example_backend,
    forged_client_token,
)
from test_backend_adapters import app_process, bearer

from agtest.server import CONFIDENTIAL, ServerProcess, tokens_for
from authgear.backend import (
    AuthenticatedClient,
    AuthenticatedUser,
    InvalidToken,
    JWTVerifier,
    ResolverClient,
    SimpleRequest,
)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clients")


@pytest.fixture(scope="module")
def machine_token(authgear_server: ServerProcess) -> str:
    return client_token(authgear_server)[0]


@pytest.fixture(scope="module")
def user_token(authgear_server: ServerProcess) -> str:
    return str(tokens_for(authgear_server)[0]["access_token"])


@pytest.fixture(scope="module")
def allowing(authgear_server: ServerProcess, module_tmp: Path) -> Iterator[dict[str, str]]:
    """The example backends with --allow-clients: kind-mode → URL."""
    started: dict[str, BackendProcess] = {}
    try:
        for kind in ("fastapi", "flask"):
            for mode in ("jwt", "resolver"):
                started[f"{kind}-{mode}"] = example_backend(
                    kind, mode, authgear_server.url, module_tmp, "--allow-clients"
                )
        yield {name: b.url for name, b in started.items()}
    finally:
        for backend in started.values():
            backend.stop()


def test_client_token_claims_say_client_credentials_not_a_user(
    authgear_server: ServerProcess, machine_token: str
) -> None:
    claims = jwt.decode(machine_token, options={"verify_signature": False})
    assert claims["gty"] == "client-credentials"
    assert claims["sub"] == claims["client_id"] == CONFIDENTIAL
    assert "auth_time" not in claims
    assert not [k for k in claims if k.startswith("https://authgear.com/claims/user/")]


def test_resolver_answers_client_token_as_no_session_with_client_headers(
    authgear_server: ServerProcess, machine_token: str
) -> None:
    r = httpx2.get(authgear_server.url + "/_resolver/resolve", headers=bearer(machine_token))
    assert r.status_code == 200
    assert r.headers["x-authgear-session-valid"] == "false"
    assert "x-authgear-user-id" not in r.headers
    assert r.headers["x-authgear-client-valid"] == "true"
    assert r.headers["x-authgear-client-id"] == CONFIDENTIAL
    assert r.headers["x-authgear-credential"] == "bearer"
    granted = client_token(authgear_server)[1]
    assert r.headers.get("x-authgear-client-scopes", "") == granted
    # Userinfo has no user to describe either.
    r = httpx2.get(authgear_server.url + "/oauth2/userinfo", headers=bearer(machine_token))
    assert r.status_code == 401


@pytest.mark.parametrize("kind", ["fastapi_jwt", "fastapi_resolver", "flask_jwt", "flask_resolver"])
def test_attack_client_token_with_full_access_on_api_write_is_401(
    kind: str,
    request: pytest.FixtureRequest,
    authgear_server: ServerProcess,
    machine_token: str,
    user_token: str,
) -> None:
    backend = request.getfixturevalue(kind)
    tokens = {"real": machine_token}
    if kind.endswith("_jwt"):  # the resolver only knows tokens it issued
        tokens["forged with gty"] = forged_client_token(authgear_server)
        tokens["forged without gty"] = forged_client_token(authgear_server, gty=False)
    for name, token in tokens.items():
        for path in ("/api/write", "/api/me", "/api/admin"):
            r = httpx2.get(backend.url + path, headers=bearer(token))
            assert r.status_code == 401, (name, path, r.text)
            assert 'error="invalid_token"' in r.headers["www-authenticate"], (name, path)
        r = httpx2.get(backend.url + "/api/hello", headers=bearer(token))
        assert r.status_code == 401, (name, r.text)
    # The route itself works for a user with the scope.
    assert httpx2.get(backend.url + "/api/write", headers=bearer(user_token)).status_code in (
        200,
        403,  # resolver mode reports no scopes
    )


@pytest.mark.parametrize("name", ["fastapi-jwt", "fastapi-resolver", "flask-jwt", "flask-resolver"])
def test_attack_client_token_refused_by_require_user_even_when_clients_allowed(
    name: str, allowing: dict[str, str], machine_token: str, user_token: str
) -> None:
    url = allowing[name]
    for path in ("/api/write", "/api/me", "/api/admin", "/api/hello"):
        r = httpx2.get(url + path, headers=bearer(machine_token))
        assert r.status_code == 401, (path, r.text)
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
    # require_client accepts the client, as a client, and refuses a user.
    r = httpx2.get(url + "/api/machine", headers=bearer(machine_token))
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["kind"] == "client" and me["client_id"] == CONFIDENTIAL and "sub" not in me
    assert me["source"] == name.split("-")[1]
    r = httpx2.get(url + "/api/machine", headers=bearer(user_token))
    assert r.status_code == 401
    assert httpx2.get(url + "/api/me", headers=bearer(user_token)).json()["kind"] == "user"


def test_adapters_refuse_client_token_where_a_user_is_required(
    authgear_server: ServerProcess, module_tmp: Path, machine_token: str, user_token: str
) -> None:
    apps = [
        app_process("starlette", "jwt", authgear_server, module_tmp, "--allow-clients"),
        app_process("fastapi-mw", "resolver", authgear_server, module_tmp, "--allow-clients"),
        app_process("django-wsgi", "jwt", authgear_server, module_tmp, "--allow-clients"),
        app_process("django-asgi", "resolver", authgear_server, module_tmp, "--allow-clients"),
    ]
    try:
        starlette, fastapi_mw, django_wsgi, django_asgi = (a.url for a in apps)
        # Starlette middleware, required=True: users only.
        assert httpx2.get(starlette + "/api/me", headers=bearer(machine_token)).status_code == 401
        # FastAPI module-level dependencies.
        assert (
            httpx2.get(fastapi_mw + "/api/hello", headers=bearer(machine_token)).status_code == 401
        )
        assert (
            httpx2.get(fastapi_mw + "/api/admin", headers=bearer(machine_token)).status_code == 401
        )
        r = httpx2.get(fastapi_mw + "/api/machine", headers=bearer(machine_token))
        assert r.status_code == 200 and r.json()["kind"] == "client"
        assert (
            httpx2.get(fastapi_mw + "/api/machine", headers=bearer(user_token)).status_code == 401
        )
        for token, kind in ((machine_token, "client"), (user_token, "user")):
            assert httpx2.get(fastapi_mw + "/api/any", headers=bearer(token)).json()["kind"] == kind
        # Django, sync and async.
        for url in (django_wsgi, django_asgi):
            r = httpx2.get(url + "/api/me", headers=bearer(machine_token))
            assert r.status_code == 401 and r.json()["error"] == "invalid_token", r.text
            r = httpx2.get(url + "/api/machine", headers=bearer(machine_token))
            assert r.status_code == 200 and r.json()["client_id"] == CONFIDENTIAL
            assert httpx2.get(url + "/api/machine", headers=bearer(user_token)).status_code == 401
    finally:
        for a in apps:
            a.stop()


def test_verifier_and_resolver_client_hand_out_clients_only_when_allowed(
    authgear_server: ServerProcess, machine_token: str
) -> None:
    request = SimpleRequest({"authorization": f"Bearer {machine_token}"})
    strict = JWTVerifier(authgear_server.url)
    lenient = JWTVerifier(authgear_server.url, allow_clients=True)
    for verifier in (strict, lenient):
        with pytest.raises(InvalidToken):
            verifier.verify(machine_token)  # verify() is for users, always
    with pytest.raises(InvalidToken):
        strict.authenticate(request)
    client = lenient.authenticate(request)
    assert isinstance(client, AuthenticatedClient) and not isinstance(client, AuthenticatedUser)
    assert client.client_id == CONFIDENTIAL and client.credential == "bearer"
    assert asyncio.run(lenient.verify_principal_async(machine_token)) == client
    # A token from a server without `gty`: sub == client_id still marks a client.
    legacy = lenient.verify_principal(forged_client_token(authgear_server, gty=False))
    assert isinstance(legacy, AuthenticatedClient) and FULL_ACCESS in legacy.scopes
    with pytest.raises(InvalidToken):
        strict.verify_principal(forged_client_token(authgear_server, gty=False))

    resolver = ResolverClient(authgear_server.url)
    with pytest.raises(InvalidToken):
        resolver.authenticate(request)
    resolver_lenient = ResolverClient(authgear_server.url, allow_clients=True)
    with pytest.raises(InvalidToken):
        resolver_lenient.resolve(f"Bearer {machine_token}")
    found = resolver_lenient.authenticate(request)
    assert isinstance(found, AuthenticatedClient) and found.source == "resolver"
    for closable in (strict, lenient, resolver, resolver_lenient):
        closable.close()
