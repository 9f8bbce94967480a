"""``identity_providers:`` configuration (issue 15.1): client secrets from the environment and
from files reach a real oidc-provider and never the log, and a bad entry stops the server with
one line that names it (and never quotes a secret). Configuration is not storage: SQLite only."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from sso_support import new_login, sso_to_callback, start_authorize

from agtest.server import (
    AUTHGEAR,
    ServerProcess,
    callback_params,
    exchange,
    free_port,
    server_config,
)
from agtest.upstream import UpstreamIdp, start_upstream_idp

# A secret no test data contains by chance: searched for in logs and error messages.
MARKER = "s3cr3t-marker-7f1d"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[int, UpstreamIdp]]:
    """oidc-provider whose clients redirect to our server on ``port`` (not started yet)."""
    port = free_port()
    idp = start_upstream_idp(f"http://127.0.0.1:{port}")
    try:
        yield port, idp
    finally:
        idp.stop()


def _without_secret(idp: UpstreamIdp, name: str) -> dict[str, Any]:
    entry = idp.provider(name)
    del entry["client_secret"]
    return entry


def _sign_in(server: ServerProcess, alias: str) -> httpx2.Response:
    """A whole app sign-in through ``alias``: the token response."""
    with httpx2.Client(base_url=server.url, follow_redirects=False, timeout=30) as c:
        page, flow = start_authorize(c)
        answer = c.get(sso_to_callback(c, page, alias, new_login()))
        return exchange(server, callback_params(answer)["code"], flow)


def test_client_secrets_from_environment_and_files_reach_the_provider_and_never_the_log(
    upstream: tuple[int, UpstreamIdp], tmp_path: Path
) -> None:
    port, idp = upstream
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "other").write_text("secret-other\n")  # trimmed
    (secrets_dir / "userinfo").write_text("secret-userinfo")
    providers = [
        _without_secret(idp, "good"),  # AUTHGEAR_IDENTITY_PROVIDERS__GOOD__CLIENT_SECRET
        {**_without_secret(idp, "other"), "client_secret_file": str(secrets_dir / "other")},
        _without_secret(idp, "userinfo"),  # ..._CLIENT_SECRET_FILE
    ]
    server = ServerProcess(
        tmp_path / "data", port, server_config(port, identity_providers=providers)
    )
    server.start(
        env={
            "AUTHGEAR_IDENTITY_PROVIDERS__GOOD__CLIENT_SECRET": "secret-good",
            "AUTHGEAR_IDENTITY_PROVIDERS__USERINFO__CLIENT_SECRET_FILE": str(
                secrets_dir / "userinfo"
            ),
            "AUTHGEAR_LOG_LEVEL": "debug",
        }
    )
    try:
        for alias in ("good", "other", "userinfo"):
            r = _sign_in(server, alias)
            assert r.status_code == 200, (alias, r.text)
    finally:
        server.stop()
    log = server.log()
    assert "answer refused" not in log
    for secret in ("secret-good", "secret-other", "secret-userinfo"):
        assert secret not in log
    assert "secret-other" not in (tmp_path / "data" / "authgear.yaml").read_text()


def test_a_wrong_secret_from_the_environment_is_refused_by_the_provider_and_not_logged(
    upstream: tuple[int, UpstreamIdp], tmp_path: Path
) -> None:
    """The environment wins over the file's value (as for every setting): a wrong one there
    breaks the token exchange, which is refused with a clear page; the value is not logged."""
    port, idp = upstream
    config = server_config(port, identity_providers=[idp.provider("good")])
    server = ServerProcess(tmp_path / "data", port, config)
    server.start(env={"AUTHGEAR_IDENTITY_PROVIDERS__GOOD__CLIENT_SECRET": MARKER})
    try:
        with httpx2.Client(base_url=server.url, follow_redirects=False, timeout=30) as c:
            page, _flow = start_authorize(c)
            r = c.get(sso_to_callback(c, page, "good", new_login()))
            assert r.status_code == 303 and "/oauth2/" not in r.headers["location"]
    finally:
        server.stop()
    log = server.log()
    assert "sso good: answer refused: token_exchange" in log
    assert MARKER not in log


def _start_error(tmp_path: Path, config: dict[str, Any], env: dict[str, str]) -> str:
    """``authgear serve`` with this config: it must exit 1 with one line, which is returned."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "authgear.yaml").write_text(yaml.safe_dump(config))
    r = subprocess.run(
        [AUTHGEAR, "serve", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("authgear: "), r.stderr
    assert MARKER not in r.stderr + r.stdout
    return lines[0]


def _oidc(alias: str = "corp", **extra: Any) -> dict[str, Any]:
    return {
        "alias": alias,
        "type": "oidc",
        "issuer": "https://id.example.com",
        "client_id": "authgear",
        "client_secret": MARKER,
        **extra,
    }


BAD_ENTRIES: list[tuple[str, list[dict[str, Any]], dict[str, str], list[str]]] = [
    (
        "env_names_no_alias",
        [_oidc()],
        {"AUTHGEAR_IDENTITY_PROVIDERS__CROP__CLIENT_SECRET": MARKER},
        ["AUTHGEAR_IDENTITY_PROVIDERS__CROP__CLIENT_SECRET", "names no identity provider"],
    ),
    ("no_secret", [{**_oidc(), "client_secret": None}], {}, ["needs client_secret"]),
    (
        "secret_and_file",
        [_oidc(client_secret_file="/nonexistent")],
        {},
        ["client_secret_file", "set one of them"],
    ),
    ("oidc_without_issuer", [{**_oidc(), "issuer": None}], {}, ["needs issuer"]),
    ("http_issuer", [_oidc(issuer="http://id.example.com")], {}, ["https"]),
    ("issuer_with_userinfo", [_oidc(issuer="https://a:b@id.example.com")], {}, ["user name"]),
    (
        "azure_without_tenant",
        [{**_oidc(), "type": "azureadv2", "issuer": None}],
        {},
        ["needs tenant"],
    ),
    ("scopes_without_openid", [_oidc(scopes=["email"])], {}, ["must include openid"]),
    ("upper_case_alias", [_oidc("Corp")], {}, ["alias"]),
    ("same_alias_twice", [_oidc(), _oidc()], {}, ["appears twice"]),
    ("aliases_sharing_an_env_name", [_oidc("a-b"), _oidc("a_b")], {}, ["share"]),
    ("unknown_key", [_oidc(client_secrett="x")], {}, ["client_secrett"]),
]


@pytest.mark.parametrize(
    ("providers", "env", "expected"),
    [pytest.param(p, e, x, id=name) for name, p, e, x in BAD_ENTRIES],
)
def test_bad_identity_provider_config_stops_the_server_with_one_line_without_the_secret(
    tmp_path: Path, providers: list[dict[str, Any]], env: dict[str, str], expected: list[str]
) -> None:
    entries = [{k: v for k, v in p.items() if v is not None} for p in providers]
    config = server_config(free_port(), identity_providers=entries)
    line = _start_error(tmp_path, config, env)
    for part in expected:
        assert part in line, line
