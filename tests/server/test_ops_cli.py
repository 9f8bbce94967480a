"""An operator's commands: they act on the database the server uses (or refuse, naming it),
migrations are a step the operator controls, secrets come from files, keys are encrypted at
rest, and every failure is one line. Real PostgreSQL (TLS too) and real server processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import yaml

from agtest.server import (
    AUTHGEAR,
    CONFIDENTIAL,
    CONFIDENTIAL_SECRET,
    ROTATING,
    ServerProcess,
    free_port,
    refresh,
    server_config,
    tokens_for,
)
from agtest.services import Postgres, _as_owner, _pg_bin
from agtest.tls import certificates

KEK_1 = "ZmFrZSBrZWsgZm9yIHRlc3RzLCAzMiBieXRlcyEhISE="  # 32 bytes in base64, for tests only
KEK_2 = "c2Vjb25kIGZha2Uga2VrIGZvciB0ZXN0cyAzMiBiISE="


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUTHGEAR, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("authgear: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


class Serve:
    """`authgear serve ARGS` as a process, for the tests that run it without a config."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [AUTHGEAR, "serve", "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx2.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server did not start: {self.output}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        assert self.proc.stdout is not None
        self.output = self.proc.stdout.read()


def tables(url: str) -> set[str]:
    import asyncio

    import asyncpg

    async def run() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            return {r[0] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(run())


# -- 1. the database the server uses ------------------------------------------------------------


def test_commands_after_serve_database_url_use_that_database(
    postgres: Postgres, tmp_path: Path
) -> None:
    """README: `serve --database-url postgresql://...` then `admin keys create`, `keys rotate`
    in the same folder act on PostgreSQL, not on a stray SQLite file."""
    url = postgres.create_database(f"ops_{time.monotonic_ns()}")
    data = tmp_path / "data"
    server = Serve(
        "--data-dir", str(data), "--database-url", url,
        env={"AUTHGEAR_KEY_REFRESH_INTERVAL": "1"}, port=free_port(),
    )  # fmt: skip
    try:
        key = cli("admin", "keys", "create", "--data-dir", str(data))
        assert key.returncode == 0, key.stderr
        r = httpx2.get(
            server.url + "/_api/admin/users",
            headers={"Authorization": f"Bearer {key.stdout.strip()}"},
        )
        assert r.status_code == 200, r.text
        before = {k["kid"] for k in httpx2.get(server.url + "/oauth2/jwks").json()["keys"]}
        assert cli("keys", "rotate", "--data-dir", str(data)).returncode == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            after = {k["kid"] for k in httpx2.get(server.url + "/oauth2/jwks").json()["keys"]}
            if after > before:
                break
            time.sleep(0.5)
        assert after > before
    finally:
        server.stop()
    assert not (data / "authgear.db").exists()
    assert yaml.safe_load((data / "authgear.yaml").read_text())["database_url"] == url
    first = server.output.splitlines()[0]
    assert "SQLite" not in first
    assert f"using the database postgresql://authgear@127.0.0.1:{postgres.port}/" in first


def test_a_command_that_would_use_another_database_refuses(
    postgres: Postgres, tmp_path: Path
) -> None:
    """The server got its database from the environment; a shell without it would have used
    (and created) a SQLite file in the folder."""
    url = postgres.create_database(f"ops_{time.monotonic_ns()}")
    data = tmp_path / "data"
    server = Serve("--data-dir", str(data), env={"AUTHGEAR_DATABASE_URL": url}, port=free_port())
    server.stop()
    for args in (["admin", "keys", "create"], ["keys", "rotate"], ["users", "create", "a@b.c"]):
        line = one_line_error(cli(*args, "--data-dir", str(data)))
        assert f"uses postgresql://authgear@127.0.0.1:{postgres.port}/" in line
        assert f"would use sqlite:///{data.resolve()}/authgear.db" in line
        assert "AUTHGEAR_DATABASE_URL" in line
    assert not (data / "authgear.db").exists()
    # With the same database it works.
    ok = cli("keys", "list", "--data-dir", str(data), env={"AUTHGEAR_DATABASE_URL": url})
    assert ok.returncode == 0, ok.stderr


# -- 8. migrations ------------------------------------------------------------------------------


def test_migrations_are_a_step_the_operator_controls(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.create_database(f"mig_{time.monotonic_ns()}")
    data = str(tmp_path / "data")
    env = {"AUTHGEAR_DATABASE_URL": url}
    port = free_port()
    refused = cli("serve", "--data-dir", data, "--port", str(port), "--no-migrate", env=env)
    assert "authgear db upgrade" in one_line_error(refused)
    # Read-only commands never migrate: they refuse, and the database stays empty.
    for args in (["keys", "list"], ["admin", "users", "list"], ["admin", "keys", "list"]):
        assert "run `authgear db upgrade`" in one_line_error(
            cli(*args, "--data-dir", data, env=env)
        )
    assert tables(url) == set()
    current = cli("db", "current", "--data-dir", data, env=env)
    assert current.returncode == 0 and "schema none (empty database)" in current.stdout
    check = one_line_error(cli("db", "check", "--data-dir", data, env=env))
    assert "pending (0001, 0002, 0003" in check
    assert cli("db", "upgrade", "--data-dir", data, env=env).returncode == 0
    ok = cli("db", "check", "--data-dir", data, env=env)
    assert ok.returncode == 0 and "up to date" in ok.stdout
    assert "alembic_version" in tables(url)
    server = Serve("--data-dir", data, "--no-migrate", env=env, port=port)
    server.stop()


# -- 9. strict config, one-line errors ----------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "password authentication failed"),
        ("nothing listening", "connection refused"),
        ("no such database", "does not exist"),
    ],
)
def test_serve_with_a_bad_database_is_one_line(
    case: str, expected: str, postgres: Postgres, tmp_path: Path
) -> None:
    port = postgres.port if case != "nothing listening" else free_port()
    password = "not-the-password" if case == "wrong password" else "authgear"
    name = "nope" if case == "no such database" else "authgear"
    url = f"postgresql://authgear:{password}@127.0.0.1:{port}/{name}"
    r = cli("serve", "--data-dir", str(tmp_path), "--port", str(free_port()),
            env={"AUTHGEAR_DATABASE_URL": url})  # fmt: skip
    line = one_line_error(r)
    assert expected in line and "not-the-password" not in line
    assert f"postgresql://authgear:***@127.0.0.1:{port}/{name}" in line


@pytest.mark.parametrize(
    ("config", "env", "expected"),
    [
        ({"trusted_proxies": ["10.0.0.300"]}, {}, "authgear.yaml: trusted_proxies"),
        ({}, {"AUTHGEAR_TRUSTED_PROXIES": "[nonsense]"}, "environment AUTHGEAR_TRUSTED_PROXIES"),
        ({}, {"AUTHGEAR_PORT": "eighty"}, "environment AUTHGEAR_PORT: port"),
        ({}, {"AUTHGEAR_RATE_LIMITS__ENABLED": "maybe"}, "AUTHGEAR_RATE_LIMITS__ENABLED"),
        ({}, {"AUTHGEAR_DATABASE_URL_FILE": "/nonexistent/db"}, "cannot read /nonexistent/db"),
        ({"key_encryption_key": "short"}, {}, "key_encryption_key: Value error, must be 32"),
        ({"admin_port": 1}, {"AUTHGEAR_PORT": "1"}, "admin_port and port are both 1"),
    ],
)
def test_config_errors_name_their_real_source(
    config: dict[str, object], env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    (tmp_path / "authgear.yaml").write_text(yaml.safe_dump(config))
    r = cli("serve", "--data-dir", str(tmp_path), env=env)
    assert expected in one_line_error(r)


def test_only_documented_variables_are_settings(tmp_path: Path) -> None:
    """The SDK's own variables and typos are not read as server settings (a typo is named
    in a warning at start)."""
    port = free_port()
    env = {
        "AUTHGEAR_ENDPOINT": "http://elsewhere",
        "AUTHGEAR_CLIENT_ID": "x",
        "AUTHGEAR_LOG_LEVL": "debug",  # a typo
    }
    server = ServerProcess(tmp_path, port, server_config(port, log_level="info"))
    server.start(env=env)
    server.stop()
    assert "ignoring AUTHGEAR_LOG_LEVL" in server.log()
    assert "AUTHGEAR_ENDPOINT" not in server.log()
    listed = cli("keys", "list", "--data-dir", str(tmp_path), env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split()[:2] == ["KID", "CREATED"]


# -- 7. secrets from files, keys encrypted at rest ----------------------------------------------


def test_secrets_come_from_files(postgres: Postgres, tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    url = postgres.create_database(f"sec_{time.monotonic_ns()}")
    (secrets_dir / "database_url").write_text(url + "\n")
    port = free_port()
    config = server_config(port)
    client = next(c for c in config["clients"] if c["id"] == CONFIDENTIAL)
    (secrets_dir / "client_hash").write_text(client.pop("client_secret_hash"))
    client["client_secret_hash_file"] = str(secrets_dir / "client_hash")
    config["key_encryption_key_file"] = str(secrets_dir / "kek")
    (secrets_dir / "kek").write_text(KEK_1)
    server = ServerProcess(tmp_path / "data", port, config)
    server.start(env={"AUTHGEAR_DATABASE_URL_FILE": str(secrets_dir / "database_url")})
    try:
        r = httpx2.post(
            server.url + "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(CONFIDENTIAL, CONFIDENTIAL_SECRET),
        )
        assert r.status_code == 200, r.text
        assert tables(url) >= {"users", "signing_keys"}  # the server is on PostgreSQL
    finally:
        server.stop()
    assert not (tmp_path / "data" / "authgear.db").exists()
    # Both the value and the file: refused, naming both.
    both = cli(
        "keys", "list", "--data-dir", str(tmp_path / "data"),
        env={"AUTHGEAR_DATABASE_URL_FILE": str(secrets_dir / "database_url"),
             "AUTHGEAR_DATABASE_URL": url},
    )  # fmt: skip
    line = one_line_error(both)
    assert "AUTHGEAR_DATABASE_URL_FILE" in line and "AUTHGEAR_DATABASE_URL)" in line


def _stored_keys(server: ServerProcess) -> list[str]:
    rows = server.query("SELECT private_pem FROM signing_keys")
    rows += server.query("SELECT value FROM server_secrets WHERE name = 'refresh_rotation_key'")
    return [r[0] for r in rows]


def test_signing_keys_encrypted_at_rest_with_a_rotatable_kek(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    server = fresh_server
    server.start()  # no KEK yet: plaintext rows, as an existing install has
    tokens, _ = tokens_for(server, ROTATING)
    jwks = httpx2.get(server.url + "/oauth2/jwks").json()
    assert all(not v.startswith("enc:") for v in _stored_keys(server))
    server.stop()

    kek1, kek2 = tmp_path / "kek1", tmp_path / "kek2"
    kek1.write_text(KEK_1)
    kek2.write_text(KEK_2)
    server.config["key_encryption_key_file"] = str(kek1)
    server.start()  # the plaintext rows are encrypted at start
    stored = _stored_keys(server)
    assert len(stored) == 2 and all(v.startswith("enc:v1:") for v in stored)
    assert not any("PRIVATE KEY" in v for v in stored)
    assert httpx2.get(server.url + "/oauth2/jwks").json() == jwks
    # The refresh-token key survived: the rotating client's refresh still works.
    r = refresh(server, tokens["refresh_token"], ROTATING)
    assert r.status_code == 200, r.text
    tokens = r.json()
    server.stop()

    # Without the KEK the server does not start: one line saying what to configure.
    del server.config["key_encryption_key_file"]
    server.write_config()
    line = one_line_error(cli("serve", "--data-dir", str(server.data_dir)))
    assert "key_encryption_key" in line and "not configured" in line
    assert "key_encryption_key" in one_line_error(
        cli("keys", "rotate", "--data-dir", str(server.data_dir))
    )

    # Rotating the KEK: the new one current, the old one readable, then re-encrypted.
    server.config["key_encryption_key_file"] = str(kek2)
    server.config["old_key_encryption_key_files"] = [str(kek1)]
    server.start()
    rewrapped = _stored_keys(server)
    assert all(v.startswith("enc:v1:") for v in rewrapped)
    assert {v.split(":")[2] for v in rewrapped} != {v.split(":")[2] for v in stored}
    server.stop()
    del server.config["old_key_encryption_key_files"]
    server.start()  # the old KEK is no longer needed
    assert httpx2.get(server.url + "/oauth2/jwks").json() == jwks
    assert refresh(server, tokens["refresh_token"], ROTATING).status_code == 200
    listed = cli("keys", "list", "--data-dir", str(server.data_dir))
    assert "encrypted" in listed.stdout and "plaintext" not in listed.stdout


# -- 8. TLS to PostgreSQL ----------------------------------------------------------------------


@pytest.fixture
def tls_postgres(tmp_path: Path) -> Iterator[tuple[Postgres, Path]]:
    """A cluster that accepts only TLS connections."""
    pg = Postgres(tmp_path / "pg", free_port())
    pg.init()
    data = pg.folder / "data"
    ca, cert, key = certificates(data)
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam("postgres")
        for p in (cert, key):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    os.chmod(key, 0o600)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n")
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "hostnossl all all 0.0.0.0/0 reject\n"
    )
    pg.start()
    subprocess.run(
        _as_owner([_pg_bin("createdb"), "-h", str(pg.folder), "-p", str(pg.port),
                   "-U", "authgear", "authgear"]),
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    yield pg, ca
    pg.stop("immediate")


def test_sslmode_in_a_postgresql_url(tls_postgres: tuple[Postgres, Path], tmp_path: Path) -> None:
    pg, ca = tls_postgres
    base = f"postgresql://authgear:authgear@127.0.0.1:{pg.port}/authgear"
    verified = f"{base}?sslmode=verify-full&sslrootcert={ca}"
    assert cli("db", "upgrade", "--database-url", verified).returncode == 0
    for url in (f"{base}?sslmode=require", verified):
        r = cli("db", "check", "--database-url", url)
        assert r.returncode == 0, r.stderr
    port = free_port()
    server = ServerProcess(tmp_path / "data", port, server_config(port, database_url=verified))
    server.start()
    try:
        tokens, _ = tokens_for(server)
        assert refresh(server, tokens["refresh_token"]).status_code == 200
    finally:
        server.stop()
    # sslmode=disable really disables TLS: this cluster refuses it, in one line.
    assert "no encryption" in one_line_error(
        cli("db", "check", "--database-url", f"{base}?sslmode=disable")
    )
    # A certificate that does not chain to the given root is refused.
    other_ca, _, _ = certificates(tmp_path)
    bad = f"{base}?sslmode=verify-full&sslrootcert={other_ca}"
    assert "certificate verify failed" in one_line_error(cli("db", "check", "--database-url", bad))
    assert "sslmode must be one of" in one_line_error(
        cli("db", "check", "--database-url", f"{base}?sslmode=sometimes")
    )
