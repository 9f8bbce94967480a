"""Attacks on the code exchange and the grants (issue 9 points 3, 4 and 7; RFC 9700 §2.1.1,
§4.14; RFC 6749 §4.1.3, §4.4, §5.2), on SQLite and PostgreSQL.

- PKCE downgrade: a code_verifier for a code issued without a challenge is invalid_grant.
- Grants and scopes per client: an unlisted grant is unauthorized_client; a client_credentials
  token never carries openid, offline_access or a user scope (invalid_scope).
- The exchange validates everything before it claims the code: another client, a wrong
  redirect URI or verifier cannot burn someone else's code; odd input is never a 500.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agtest.server import (
    API_READ_SCOPE,
    API_WRITE_SCOPE,
    CONFIDENTIAL,
    CONFIDENTIAL_SECRET,
    NATIVE,
    ROTATING,
    WEB_REDIRECT,
    Browser,
    Flow,
    ServerProcess,
    callback_params,
    exchange,
    free_port,
    login,
    new_email,
    refresh,
    server_config,
)
from agtest.services import Postgres
from authgear.server.config import ConfigError, load_settings

PASSWORD = "correct horse battery"
SECRET_HASH = "sha256:" + hashlib.sha256(CONFIDENTIAL_SECRET.encode()).hexdigest()
LEGACY = "tok-legacy"  # confidential, pkce_required: false (documented as legacy)
CODE_ONLY = "tok-code-only"  # public, grant_types: [authorization_code]
M2M = "tok-m2m"  # confidential, grant_types: [client_credentials]
NO_M2M = "tok-no-m2m"  # confidential with the default grants (no client_credentials)
EXTRA_CLIENTS: list[dict[str, Any]] = [
    {
        "id": LEGACY,
        "type": "confidential",
        "client_secret_hash": SECRET_HASH,
        "redirect_uris": [WEB_REDIRECT],
        "pkce_required": False,
    },
    {
        "id": CODE_ONLY,
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code"],
    },
    {
        "id": M2M,
        "type": "confidential",
        "client_secret_hash": SECRET_HASH,
        "redirect_uris": [WEB_REDIRECT],
        "grant_types": ["client_credentials"],
        "allowed_scopes": [API_READ_SCOPE],
    },
    {
        "id": NO_M2M,
        "type": "confidential",
        "client_secret_hash": SECRET_HASH,
        "redirect_uris": [WEB_REDIRECT],
    },
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    port = free_port()
    config = server_config(port)
    config["clients"] = [*config["clients"], *EXTRA_CLIENTS]
    if request.param == "postgresql":
        pg: Postgres = request.getfixturevalue("postgres")
        config["database_url"] = pg.create_database(f"ag_{secrets.token_hex(6)}")
    proc = ServerProcess(tmp_path_factory.mktemp("tokens"), port, config)
    proc.start()
    yield proc
    proc.stop()


def token(server: ServerProcess, **data: str) -> httpx2.Response:
    return httpx2.post(server.url + "/oauth2/token", data=data)


def assert_error(r: httpx2.Response, error: str, status: int = 400) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"] == error, r.text


def code_for(server: ServerProcess, client_id: str = NATIVE, **extra: str) -> tuple[str, Flow]:
    redirect = WEB_REDIRECT if client_id in (CONFIDENTIAL, LEGACY, NO_M2M) else None
    flow = Flow.new(client_id, redirect) if redirect else Flow.new(client_id)
    cb, flow, browser = login(server, new_email(), PASSWORD, flow=flow, signup=True, **extra)
    browser.close()
    return cb["code"], flow


def legacy_code_without_pkce(server: ServerProcess) -> str:
    """A code for the legacy confidential client, asked for without code_challenge."""
    params = Flow.new(LEGACY, WEB_REDIRECT).params()
    del params["code_challenge"], params["code_challenge_method"]
    params["x_page"] = "signup"
    browser = Browser(server.url)
    r = browser.authorize(**params)
    assert r.status_code == 303 and r.headers["location"].startswith("/signup?flow="), r.text
    cb = callback_params(browser.submit(r.headers["location"], new_email(), PASSWORD))
    browser.close()
    return cb["code"]


def legacy_exchange(server: ServerProcess, code: str, **extra: str) -> httpx2.Response:
    return token(
        server,
        grant_type="authorization_code",
        client_id=LEGACY,
        client_secret=CONFIDENTIAL_SECRET,
        code=code,
        redirect_uri=WEB_REDIRECT,
        **extra,
    )


# -- PKCE ------------------------------------------------------------------------------------


def test_pkce_downgrade_verifier_for_a_code_issued_without_challenge_is_invalid_grant(
    server: ServerProcess,
) -> None:
    code = legacy_code_without_pkce(server)
    r = legacy_exchange(server, code, code_verifier=secrets.token_urlsafe(48))
    assert_error(r, "invalid_grant")
    assert "without PKCE" in r.json()["error_description"]
    # Refused before the code was claimed: the legacy client itself can still exchange it.
    assert legacy_exchange(server, code).status_code == 200


@pytest.mark.parametrize("client_id", [NATIVE, CONFIDENTIAL])
def test_authorize_without_code_challenge_is_refused_for_every_client_by_default(
    server: ServerProcess, client_id: str
) -> None:
    redirect = WEB_REDIRECT if client_id == CONFIDENTIAL else "http://127.0.0.1:5555/callback"
    params = Flow.new(client_id, redirect).params()
    del params["code_challenge"], params["code_challenge_method"]
    r = httpx2.get(server.url + "/oauth2/authorize", params=params)
    assert r.status_code == 303
    assert "error=invalid_request" in r.headers["location"]
    assert "PKCE" in httpx2.URL(r.headers["location"]).params["error_description"]


def test_code_with_challenge_and_no_verifier_is_refused_without_burning_the_code(
    server: ServerProcess,
) -> None:
    code, flow = code_for(server)
    r = token(
        server,
        grant_type="authorization_code",
        client_id=NATIVE,
        code=code,
        redirect_uri=flow.redirect_uri,
    )
    assert_error(r, "invalid_request")
    assert_error(exchange(server, code, flow, code_verifier="x" * 43), "invalid_grant")
    assert exchange(server, code, flow).status_code == 200


@pytest.mark.parametrize(
    ("client", "message"),
    [
        ({"pkce_required": False}, "always needs PKCE"),
        ({"grant_types": ["client_credentials"]}, "only for confidential clients"),
        ({"allowed_scopes": ["openid"], "type": "confidential"}, "user scope"),
        ({"allowed_scopes": ["https://authgear.com/scopes/full-access"]}, "user scope"),
        ({"allowed_scopes": ["a b"]}, "scope token"),
        ({"grant_types": ["password"]}, "grant_types"),
    ],
)
def test_config_refuses_pkce_off_m2m_grants_or_user_scopes_on_the_wrong_client(
    tmp_path: Path, client: dict[str, Any], message: str
) -> None:
    entry: dict[str, Any] = {"id": "c", "redirect_uris": ["https://a.example/cb"], **client}
    if entry.get("type") == "confidential":
        entry["client_secret_hash"] = SECRET_HASH
        entry["grant_types"] = ["client_credentials"]
    (tmp_path / "authgear.yaml").write_text(json.dumps({"clients": [entry]}))
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path, environ={})
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


# -- grants and scopes per client --------------------------------------------------------------


def m2m(server: ServerProcess, client_id: str = CONFIDENTIAL, **data: str) -> httpx2.Response:
    return token(
        server,
        grant_type="client_credentials",
        client_id=client_id,
        client_secret=CONFIDENTIAL_SECRET,
        **data,
    )


@pytest.mark.parametrize(
    "scope",
    [
        "openid",
        "offline_access",
        "https://authgear.com/scopes/full-access",
        "https://authgear.com/scopes/full-userinfo",
        "profile email",
        f"{API_READ_SCOPE} openid offline_access https://authgear.com/scopes/full-access",
    ],
)
def test_client_credentials_asking_for_user_scopes_is_invalid_scope(
    server: ServerProcess, scope: str
) -> None:
    assert_error(m2m(server, scope=scope), "invalid_scope")


def test_client_credentials_asking_for_an_unlisted_scope_is_invalid_scope(
    server: ServerProcess,
) -> None:
    assert_error(m2m(server, M2M, scope=API_WRITE_SCOPE), "invalid_scope")
    assert_error(m2m(server, scope="https://api.example.com/admin"), "invalid_scope")


def test_client_credentials_token_carries_only_allowed_scopes(server: ServerProcess) -> None:
    r = m2m(server, scope=API_READ_SCOPE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == API_READ_SCOPE
    assert "refresh_token" not in body and "id_token" not in body
    # No scope asked: every allowed scope (RFC 6749 §3.3 default).
    everything = m2m(server).json()["scope"].split()
    assert everything == [API_READ_SCOPE, API_WRITE_SCOPE]
    # The client's token is not a user's: userinfo refuses it.
    info = httpx2.get(
        server.url + "/oauth2/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert info.status_code == 401


def test_unlisted_grant_types_are_unauthorized_client(server: ServerProcess) -> None:
    # A confidential client that does not list client_credentials.
    assert_error(m2m(server, NO_M2M), "unauthorized_client")
    # A public client never gets client_credentials.
    assert_error(
        token(server, grant_type="client_credentials", client_id=NATIVE), "unauthorized_client"
    )
    # A client without the refresh_token grant: no refresh token, and the grant is refused.
    code, flow = code_for(server, CODE_ONLY)
    tokens = exchange(server, code, flow).json()
    assert "refresh_token" not in tokens and "offline_access" not in tokens["scope"].split()
    assert_error(refresh(server, "a.b", client_id=CODE_ONLY), "unauthorized_client")
    # A machine-to-machine client cannot run the code flow.
    params = Flow.new(M2M, WEB_REDIRECT).params()
    r = httpx2.get(server.url + "/oauth2/authorize", params=params)
    assert r.status_code == 303 and "error=unauthorized_client" in r.headers["location"]
    assert_error(
        token(
            server,
            grant_type="authorization_code",
            client_id=M2M,
            client_secret=CONFIDENTIAL_SECRET,
            code="x",
            redirect_uri=WEB_REDIRECT,
        ),
        "unauthorized_client",
    )


def test_discovery_still_lists_every_grant_type(server: ServerProcess) -> None:
    doc = httpx2.get(server.url + "/.well-known/openid-configuration").json()
    assert doc["grant_types_supported"] == [
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:device_code",
    ]
    assert doc["code_challenge_methods_supported"] == ["S256"]


# -- validate everything, then claim -------------------------------------------------------------


def test_another_clients_code_is_invalid_grant_and_the_owner_still_exchanges_it(
    server: ServerProcess,
) -> None:
    code, flow = code_for(server)  # NATIVE's code; ROTATING shares its redirect URI
    stolen = exchange(server, code, Flow(ROTATING, flow.redirect_uri, flow.verifier, "", ""))
    assert_error(stolen, "invalid_grant")
    mine = exchange(server, code, flow)
    assert mine.status_code == 200, mine.text
    # Replaying it afterwards, even as the owner, is refused and revokes what it issued.
    assert_error(exchange(server, code, flow), "invalid_grant")
    assert refresh(server, mine.json()["refresh_token"]).json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "change",
    [
        {"redirect_uri": "http://127.0.0.1:5556/callback"},
        {"code_verifier": "y" * 43},
        {"code_verifier": "not a verifier"},
        {"client_id": "nobody"},
    ],
)
def test_a_failed_exchange_does_not_burn_the_code(
    server: ServerProcess, change: dict[str, str]
) -> None:
    code, flow = code_for(server)
    assert exchange(server, code, flow, **change).status_code in (400, 401)
    assert exchange(server, code, flow).status_code == 200


def _device_info(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _nested(depth: int) -> str:
    raw = ("[" * depth + "]" * depth).encode()
    return base64.urlsafe_b64encode(b'{"a":' + raw + b"}").rstrip(b"=").decode()


@pytest.mark.parametrize(
    "device_info",
    [
        _nested(1500),  # exhausts the JSON parser's recursion (was a 500 that burnt the code)
        _nested(900),  # parses, but is no device description
        _device_info({"a": {"b": {"c": {"d": {"e": {"f": {}}}}}}}),
        "!!!not base64!!!",
        _device_info([1, 2, 3]),
    ],
)
def test_hostile_x_device_info_is_ignored_never_a_500(
    server: ServerProcess, device_info: str
) -> None:
    code, flow = code_for(server)
    r = exchange(server, code, flow, x_device_info=device_info)
    assert r.status_code == 200, r.text
    grant_id = r.json()["refresh_token"].split(".")[0]
    stored = server.query("SELECT device_info FROM offline_grants WHERE id = ?", grant_id)
    assert stored and stored[0][0] in ("{}", {}), stored


def test_oversized_x_device_info_is_a_400_and_does_not_burn_the_code(server: ServerProcess) -> None:
    code, flow = code_for(server)
    r = exchange(server, code, flow, x_device_info=_nested(5000))
    assert_error(r, "invalid_request")
    assert exchange(server, code, flow).status_code == 200


def test_concurrent_exchanges_of_one_code_issue_tokens_once(server: ServerProcess) -> None:
    code, flow = code_for(server)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: exchange(server, code, flow), range(8)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [400] * 7, [r.text for r in results]
    assert {r.json()["error"] for r in results if r.status_code == 400} == {"invalid_grant"}
