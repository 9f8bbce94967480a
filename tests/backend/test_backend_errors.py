"""The backend's errors are one documented family, and each knows its own HTTP answer, so every
adapter sends the same response for it (issues 10.5 and 17.6); a misconfiguration is not an
outage (17.5); a role 403 and a scope 403 say what docs/backend.md says they say.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from backend_support import HERE, BackendProcess, DocServer, example_backend
from test_backend_adapters import bearer

from agtest.server import ServerProcess, free_port, tokens_for
from authgear._errors import AuthgearError
from authgear.backend import (
    AuthError,
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    CrossOriginRequest,
    InsufficientScope,
    InvalidToken,
    MissingCredentials,
)

FULL_ACCESS = "https://authgear.com/scopes/full-access"


def test_error_family_knows_its_http_answer() -> None:
    expected = {
        MissingCredentials(): (401, "unauthorized", 'Bearer realm="r"'),
        InvalidToken("bad"): (401, "invalid_token", 'Bearer realm="r", error="invalid_token"'),
        InsufficientScope("no", ["s1", "s2"]): (403, "insufficient_scope", 'scope="s1 s2"'),
        CrossOriginRequest(): (403, "cross_origin_request", None),
        BackendUnavailable("resolver: ConnectError"): (503, "temporarily_unavailable", None),
        ConfigurationError("issuer mismatch at https://internal"): (500, "server_error", None),
    }
    for error, (status, code, challenge) in expected.items():
        assert isinstance(error, AuthgearError) and isinstance(error, BackendError)
        assert error.status_code == status
        assert error.body()["error"] == code
        assert json.loads(error.body_bytes()) == error.body()
        headers = error.headers("r")
        assert headers["Cache-Control"] == "no-store"
        if challenge is None:
            assert "WWW-Authenticate" not in headers
        else:
            assert challenge in headers["WWW-Authenticate"]
    assert BackendUnavailable().headers()["Retry-After"] == "5"
    # What went wrong inside stays in the logs, not in the response.
    assert (
        "internal"
        not in ConfigurationError("issuer mismatch at https://internal").body_bytes().decode()
    )
    assert "ConnectError" not in BackendUnavailable("resolver: ConnectError").body_bytes().decode()
    assert isinstance(ConfigurationError("x"), ValueError)  # raised from constructors
    assert issubclass(InvalidToken, AuthError) and issubclass(MissingCredentials, AuthError)


@pytest.fixture(scope="module")
def down_backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Every adapter in resolver mode, with Authgear's resolver down (nothing on the port)."""
    tmp = tmp_path_factory.mktemp("down")
    dead = f"http://127.0.0.1:{free_port()}"
    started: dict[str, BackendProcess] = {
        "fastapi": example_backend("fastapi", "resolver", dead, tmp),
        "flask": example_backend("flask", "resolver", dead, tmp),
    }
    for app in ("starlette", "fastapi-mw", "django-wsgi", "django-asgi"):
        argv = [sys.executable, str(HERE / "apps.py"), "--app", app, "--mode", "resolver"]
        argv += ["--endpoint", dead]
        ready = "/health" if app == "starlette" else "/api/public"
        started[app] = BackendProcess(argv, tmp / f"{app}.log").start(ready)
    try:
        yield {name: b.url for name, b in started.items()}
    finally:
        for b in started.values():
            b.stop()


@pytest.mark.parametrize(
    ("app", "path"),
    [
        ("fastapi", "/api/me"),
        ("flask", "/api/me"),
        ("starlette", "/api/me"),
        ("fastapi-mw", "/api/admin"),
        ("django-wsgi", "/api/me"),
        ("django-asgi", "/api/me"),
    ],
)
def test_every_adapter_answers_the_same_503_when_authgear_is_down(
    down_backends: dict[str, str], app: str, path: str
) -> None:
    r = httpx2.get(down_backends[app] + path, headers=bearer("some-token"))
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in r.headers
    body = r.json()
    body = body.get("detail", body)  # FastAPI's HTTPException wraps it
    assert body == {"error": "temporarily_unavailable", "error_description": "try again later"}


def test_issuer_mismatch_is_a_500_with_one_log_line_not_a_503(
    authgear_server: ServerProcess, tmp_path: Path
) -> None:
    docs = DocServer()
    docs.routes["/.well-known/openid-configuration"] = (
        "json",
        {
            "issuer": "https://somewhere-else.example",
            "jwks_uri": authgear_server.url + "/oauth2/jwks",
        },
    )
    backend = example_backend("fastapi", "jwt", docs.url, tmp_path)
    try:
        token = tokens_for(authgear_server)[0]["access_token"]
        for _ in range(3):
            r = httpx2.get(backend.url + "/api/me", headers=bearer(token))
            assert r.status_code == 500, r.text
            assert r.json()["detail"] == {
                "error": "server_error",
                "error_description": "authentication is misconfigured on this server",
            }
            assert "retry-after" not in r.headers
        assert backend.log().count("says the issuer is 'https://somewhere-else.example'") == 1
    finally:
        backend.stop()
        docs.stop()


def test_role_403_names_no_scope_and_scope_403_names_the_scope(
    fastapi_jwt: BackendProcess, authgear_server: ServerProcess
) -> None:
    token = tokens_for(authgear_server, scope="openid offline_access")[0]["access_token"]
    role = httpx2.get(fastapi_jwt.url + "/api/admin", headers=bearer(token))
    assert role.status_code == 403
    assert 'error="insufficient_scope"' in role.headers["www-authenticate"]
    assert "scope=" not in role.headers["www-authenticate"].replace("insufficient_scope", "")
    scope = httpx2.get(fastapi_jwt.url + "/api/write", headers=bearer(token))
    assert scope.status_code == 403
    assert f'scope="{FULL_ACCESS}"' in scope.headers["www-authenticate"]
