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
    database_url = getattr(args, "database_url", None)
    if database_url:
        env["AUTHGEAR_DATABASE_URL"] = database_url
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
        settings = load_settings(data_dir, config_path, _overrides(args))
    except ConfigError as e:
        raise CLIError(str(e)) from None
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return settings, first_run


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from authgear.server.app import build_state, create_app, purge_forever

    settings, first_run = _load(args, create=True)
    config = settings.config
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
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
    if first_run:
        print(
            "Next: create a user with `authgear users create you@example.com`, or sign up at "
            f"{issuer}/signup; configure an SDK with the endpoint and a client id above.",
            file=out,
        )
    out.flush()

    async def serve() -> None:
        state = await build_state(settings)
        purger = asyncio.create_task(purge_forever(state))
        servers = [
            uvicorn.Server(
                uvicorn.Config(
                    create_app(settings, state=state),
                    host=config.host,
                    port=config.port,
                    log_level=config.log_level,
                    access_log=False,
                    server_header=False,
                    proxy_headers=False,
                    lifespan="on",
                )
            )
        ]
        if config.resolver_port is not None:
            servers.append(
                uvicorn.Server(
                    uvicorn.Config(
                        create_app(settings, state=state, resolver_only=True),
                        host=config.host,
                        port=config.resolver_port,
                        log_level=config.log_level,
                        access_log=False,
                        server_header=False,
                        lifespan="on",
                    )
                )
            )
        try:
            await asyncio.gather(*(s.serve() for s in servers))
        finally:
            purger.cancel()
            await state.repo.close()

    with contextlib.suppress(KeyboardInterrupt):
        _run_event_loop(serve())
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
    from authgear.server.endpoints.login import normalize_email
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

        repo = SQLRepository.open(settings.database_url)
        try:
            user = await repo.create_user(
                user_id=new_id(),
                email=email,
                password_hash=hash_password_sync(password),
                now=int(time.time()),
                email_verified=args.verified,
                roles=args.role or (),
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
        print(f"client secret (give it to the client, it is not stored): {secret}")
    print(f"client_secret_hash: {hash_client_secret(secret)}")
    return 0


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
    serve.set_defaults(func=cmd_serve)

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
