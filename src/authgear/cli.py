"""The ``authgear`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = ".authgear"


class CLIError(Exception):
    """Printed as one line, exit status 1."""


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("AUTHGEAR_DATA_DIR") or DEFAULT_DATA_DIR)


def _config_path(args: argparse.Namespace, data_dir: Path) -> Path:
    from authgear.server.config import CONFIG_FILE

    explicit = args.config or os.environ.get("AUTHGEAR_CONFIG")
    return Path(explicit) if explicit else data_dir / CONFIG_FILE


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    for flag, name in (("host", "HOST"), ("port", "PORT"), ("public_origin", "PUBLIC_ORIGIN")):
        value = getattr(args, flag, None)
        if value is not None:
            env[f"AUTHGEAR_{name}"] = str(value)
    for flag, name in (("database_url", "DATABASE_URL"), ("redis_url", "REDIS_URL")):
        value = getattr(args, flag, None)
        if value:
            env[f"AUTHGEAR_{name}"] = value
    workers = getattr(args, "workers", None)
    if workers is not None:
        env["AUTHGEAR_WORKERS"] = str(workers)
    return env


def _load(args: argparse.Namespace, *, create: bool = False) -> Any:
    from authgear.server.config import ConfigError, default_config_text, load_settings

    data_dir = _data_dir(args)
    config_path = _config_path(args, data_dir)
    first_run = False
    if create and not config_path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        host = args.host or os.environ.get("AUTHGEAR_HOST") or "127.0.0.1"
        port = args.port if args.port is not None else int(os.environ.get("AUTHGEAR_PORT", 3000))
        text, _ = default_config_text(host, port)
        config_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = config_path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, config_path)
        first_run = True
    try:
        env = _overrides(args)
        # Maintenance commands need no config file when told which database to use.
        missing_ok = not create and bool(env.get("AUTHGEAR_DATABASE_URL"))
        settings = load_settings(data_dir, config_path, env, missing_ok=missing_ok)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return settings, first_run


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    settings, first_run = _load(args, create=True)
    config = settings.config
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.workers > 1 and config.resolver_port is not None:
        raise CLIError(
            "resolver_port needs workers = 1; with several workers the resolver is served on "
            "the main port (/_resolver/resolve)"
        )
    out = sys.stdout
    issuer = config.issuer
    if first_run:
        print(f"Created {settings.data_dir}/ with a config file and a SQLite database.", file=out)
    print(f"Authgear endpoint: {issuer}", file=out)
    for c in config.clients:
        print(f"  client {c.id}  ({c.name or c.type}, {c.type})", file=out)
    print(f"  discovery: {issuer}/.well-known/openid-configuration", file=out)
    print(f"  resolver:  {issuer}/_resolver/resolve", file=out)
    if config.workers > 1:
        print(f"  {config.workers} worker processes", file=out)
    if first_run:
        print(
            "Next: create a user with `authgear users create you@example.com`, or sign up at "
            f"{issuer}/signup; configure an SDK with the endpoint and a client id above.",
            file=out,
        )
    out.flush()
    if config.workers > 1:
        return _serve_workers(args, settings)
    with contextlib.suppress(KeyboardInterrupt):
        _run_event_loop(_serve_one(settings))
    return 0


async def _serve_one(settings: Any) -> None:
    import uvicorn

    from authgear.server.app import build_state, create_app, maintain_forever

    config = settings.config
    state = await build_state(settings)
    maintenance = asyncio.create_task(maintain_forever(state))

    def server(port: int, resolver_only: bool) -> uvicorn.Server:
        app = create_app(settings, state=state, resolver_only=resolver_only)
        return uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=port,
                log_level=config.log_level,
                access_log=False,
                server_header=False,
                proxy_headers=False,
                lifespan="on",
            )
        )

    servers = [server(config.port, False)]
    if config.resolver_port is not None:
        servers.append(server(config.resolver_port, True))
    try:
        await asyncio.gather(*(s.serve() for s in servers))
    finally:
        maintenance.cancel()
        await state.repo.close()


def _serve_workers(args: argparse.Namespace, settings: Any) -> int:
    """N uvicorn worker processes sharing one listening socket and the database."""
    import tempfile

    import uvicorn

    from authgear.server.keys import load_or_create_keys
    from authgear.server.storage import migrate
    from authgear.server.storage.sql import SQLRepository

    config = settings.config
    migrate.upgrade(settings.database_url)

    async def prepare() -> None:
        repo = SQLRepository.open(settings.database_url)
        try:
            await load_or_create_keys(repo)
        finally:
            await repo.close()

    asyncio.run(prepare())
    # Workers read their settings as the parent did: same files, same overrides.
    os.environ.update(_overrides(args))
    os.environ["AUTHGEAR_DATA_DIR"] = str(settings.data_dir)
    os.environ["AUTHGEAR_CONFIG"] = str(_config_path(args, settings.data_dir))
    with tempfile.TemporaryDirectory(prefix="authgear-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run(
            "authgear.server.app:app_from_environment",
            factory=True,
            host=config.host,
            port=config.port,
            workers=config.workers,
            log_level=config.log_level,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            lifespan="on",
        )
    return 0


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (uvicorn's `standard` extra): a faster loop than asyncio's own."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _read_password(args: argparse.Namespace) -> str:
    from authgear.server.passwords import password_problem

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CLIError("no terminal to ask for a password; pass --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CLIError("the passwords do not match")
    problem = password_problem(password)
    if problem:
        raise CLIError(f"password not accepted: {problem}")
    return password


def cmd_users_create(args: argparse.Namespace) -> int:
    from authgear.server.accounts import normalize_email
    from authgear.server.passwords import hash_password_sync
    from authgear.server.storage import migrate
    from authgear.server.storage.sql import EmailTaken, SQLRepository
    from authgear.server.tokens import new_id

    settings, _ = _load(args)
    email = normalize_email(args.email)
    if email is None:
        raise CLIError(f"not an email address: {args.email!r}")
    password = _read_password(args)
    migrate.upgrade(settings.database_url)

    async def create() -> str:
        import time

        from authgear.server.admin_cli import cli_actor
        from authgear.server.storage.admin import AdminRepository

        repo = SQLRepository.open(settings.database_url)
        try:
            now = int(time.time())
            user = await repo.create_user(
                user_id=new_id(),
                email=email,
                password_hash=hash_password_sync(password),
                now=now,
                email_verified=args.verified,
                roles=args.role or (),
            )
            # Recorded like `authgear admin users create`: this too can make an admin.
            await AdminRepository(repo.engine).audit(
                cli_actor(),
                "user.create",
                now,
                target_type="user",
                target_id=user.id,
                details={"email": user.email, "roles": list(user.roles)},
            )
            return user.id
        finally:
            await repo.close()

    try:
        user_id = asyncio.run(create())
    except EmailTaken:
        raise CLIError(f"a user with email {email} already exists") from None
    print(user_id)
    return 0


def cmd_hash_secret(args: argparse.Namespace) -> int:
    import secrets

    from authgear.server.config import hash_client_secret

    if args.stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            raise CLIError("empty secret on standard input")
    else:
        secret = secrets.token_urlsafe(32)
        # Shown once, on purpose: the operator asked for a new secret. # ok-secret
        print(f"client secret (give it to the client, it is not stored): {secret}")  # ok-secret
    print(f"client_secret_hash: {hash_client_secret(secret)}")  # ok-secret: a hash
    return 0


def _repo(settings: Any) -> Any:
    """The repository, on a migrated database. Call it before starting an event loop."""
    from authgear.server.storage import migrate
    from authgear.server.storage.sql import SQLRepository

    migrate.upgrade(settings.database_url)
    return SQLRepository.open(settings.database_url)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from authgear.server.keys import rotate

    settings, _ = _load(args)
    config = settings.config
    # Every process re-reads keys within key_refresh_interval: wait two before signing.
    delay = 2 * config.key_refresh_interval
    longest = max((c.access_token_lifetime for c in config.clients), default=1800)

    repo = _repo(settings)

    async def run() -> Any:
        try:
            return await rotate(repo, publish_delay=delay, max_token_lifetime=longest)
        finally:
            await repo.close()

    new = asyncio.run(run())
    print(f"new signing key {new.kid}: published now, signs from {_when(new.activate_at)}")
    print("older keys stay in the JWKS until their tokens have expired, then retire")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    import time

    settings, _ = _load(args)

    repo = _repo(settings)

    async def run() -> Any:
        try:
            return await repo.list_signing_keys()
        finally:
            await repo.close()

    now = int(time.time())
    for k in asyncio.run(run()):
        if k.retire_at is not None and k.retire_at <= now:
            status = "retired"
        elif k.retire_at is not None:
            status = f"retiring at {_when(k.retire_at)}"
        elif k.activate_at is not None and k.activate_at > now:
            status = f"published, signs from {_when(k.activate_at)}"
        else:
            status = "signing"
        print(f"{k.kid}  created {_when(k.created_at)}  {status}")
    return 0


def _when(ts: int | None) -> str:
    import datetime

    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from authgear.server.storage import migrate

    settings, _ = _load(args)
    migrate.upgrade(settings.database_url)
    print("database is up to date")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data folder (default ./.authgear, env AUTHGEAR_DATA_DIR)")
    p.add_argument("--config", help="config file (default DATA_DIR/authgear.yaml)")
    p.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the data folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authgear", description="Authgear in Python.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the auth server")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 3000)")
    serve.add_argument(
        "--public-origin", help="public origin (issuer), e.g. https://auth.example.com"
    )
    serve.add_argument("--workers", type=int, help="server processes (default 1)")
    serve.add_argument("--redis-url", help="Redis for shared rate limits: redis://host:6379/0")
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    rotate = keys_sub.add_parser("rotate", help="add a new signing key; retire the old ones")
    _common(rotate)
    rotate.set_defaults(func=cmd_keys_rotate, host=None, port=None, public_origin=None)
    klist = keys_sub.add_parser("list", help="list signing keys")
    _common(klist)
    klist.set_defaults(func=cmd_keys_list, host=None, port=None, public_origin=None)

    users = sub.add_parser("users", help="manage users")
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION")
    create = users_sub.add_parser("create", help="create a user with a password")
    _common(create)
    create.add_argument("email")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    create.add_argument("--verified", action="store_true", help="mark the email as verified")
    create.add_argument("--role", action="append", help="give a role (repeatable)")
    create.set_defaults(func=cmd_users_create, host=None, port=None, public_origin=None)

    hs = sub.add_parser("hash-secret", help="make a client secret and its client_secret_hash")
    hs.add_argument("--stdin", action="store_true", help="hash a secret read from stdin")
    hs.set_defaults(func=cmd_hash_secret)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="apply database migrations")
    _common(up)
    up.set_defaults(func=cmd_db_upgrade, host=None, port=None, public_origin=None)

    _register_client_commands(sub)
    _register_admin_commands(sub)
    return parser


def _register_admin_commands(sub: Any) -> None:
    from authgear.server import admin_cli

    admin_cli.register(sub)


def _register_client_commands(sub: Any) -> None:
    try:
        from authgear.client import cli as client_cli
    except ImportError:
        return
    register: Callable[[Any], None] | None = getattr(client_cli, "register", None)
    if register is not None:
        register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except CLIError as e:
        print(f"authgear: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        print(
            f"authgear: missing dependency {e.name!r}; install the server extra: "
            "pip install 'authgear[server]'",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
