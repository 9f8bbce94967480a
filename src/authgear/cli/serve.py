"""``authgear serve``: the auth server, in one process or several workers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from authgear.cli._common import (
    CLIError,
    add_server_options,
    config_path,
    database_errors,
    load,
    mask_url,
    migrate,
    overrides,
    record_database,
    require_current_schema,
)

if TYPE_CHECKING:
    from authgear.server.config import Settings

log = logging.getLogger("authgear.server")


def serve(args: argparse.Namespace) -> int:
    from authgear.server import logs, serving

    settings, first_run = load(args, create=True)
    config = settings.config
    logs.configure(config.log_level, config.log_format)
    for name in settings.ignored_env:
        log.warning("ignoring %s: not an authgear setting (docs/server.md lists them)", name)
    _preflight(settings, migrate_first=config.auto_migrate and not args.no_migrate)
    record_database(settings)
    sockets = _bind(settings)
    _banner(settings, first_run)
    if config.workers > 1:
        # Workers read their settings as this process did: same files, same overrides.
        os.environ.update(overrides(args))
        os.environ["AUTHGEAR_DATA_DIR"] = str(settings.data_dir)
        os.environ["AUTHGEAR_CONFIG"] = str(config_path(args, settings.data_dir))
        with tempfile.TemporaryDirectory(prefix="authgear-metrics-") as metrics_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            serving.run(settings, sockets)
        return 0
    serving.run(settings, sockets)
    return 0


def _preflight(settings: Settings, *, migrate_first: bool) -> None:
    """Everything that can fail at start-up, checked here for a one-line error instead of a
    traceback from inside the server: the database (reachable, password, schema, migrations)
    and the stored keys (readable with the configured key-encryption key)."""
    from authgear.server.lifecycle import build_state, close_state

    if migrate_first:
        migrate(settings)
    else:
        require_current_schema(settings)

    async def check() -> None:
        state = await build_state(settings, migrate_first=False)
        await close_state(state)

    with database_errors(settings.database_url):
        asyncio.run(check())


def _bind(settings: Settings) -> list[socket.socket]:
    from authgear.server.app import listeners
    from authgear.server.serving import bind

    sockets = []
    try:
        for listener in listeners(settings.config):
            try:
                sockets.append(bind(listener.host, listener.port))
            except OSError as e:
                reason = e.strerror or type(e).__name__
                raise CLIError(
                    f"cannot listen on {listener.host}:{listener.port} ({listener.kind}): {reason}"
                ) from None
    except CLIError:
        for s in sockets:
            s.close()
        raise
    return sockets


def _banner(settings: Settings, first_run: bool) -> None:
    from authgear.server.app import listeners

    config = settings.config
    if config.log_format == "json":
        # Every line of a JSON-logging server is a JSON object: the banner is one log record.
        log.info(
            "authgear serving %s",
            config.issuer,
            extra={
                "issuer": config.issuer,
                "database": settings.database_name,
                "clients": [c.id for c in config.clients],
                "listeners": [f"{x.kind} {x.host}:{x.port}" for x in listeners(config)],
                "workers": config.workers,
                "first_run": first_run,
            },
        )
        return
    out = sys.stdout
    issuer = config.issuer
    if first_run:
        where = (
            "a SQLite database"
            if settings.is_sqlite
            else f"the database {mask_url(settings.database_name)}"
        )
        print(f"Created {settings.data_dir}/ with a config file; using {where}.", file=out)
    print(f"Authgear endpoint: {issuer}", file=out)
    for c in config.clients:
        print(f"  client {c.id}  ({c.name or c.type}, {c.type})", file=out)
    print(f"  discovery: {issuer}/.well-known/openid-configuration", file=out)
    print(f"  resolver:  {issuer}/_resolver/resolve", file=out)
    for listener in listeners(config)[1:]:
        print(f"  {listener.kind} listener: {listener.host}:{listener.port}", file=out)
    if config.workers > 1:
        print(f"  {config.workers} worker processes", file=out)
    if first_run:
        print(
            "Next: create a user with `authgear users create you@example.com`, or sign up at "
            f"{issuer}/signup; configure an SDK with the endpoint and a client id above.",
            file=out,
        )
    out.flush()


def register(subparsers: Any) -> None:
    text = "run the auth server (creates DATA_DIR and its config on first run)"
    p = subparsers.add_parser("serve", help=text, description=text)
    add_server_options(p)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 3000)")
    p.add_argument(
        "--public-origin",
        metavar="URL",
        help="the public origin (issuer), e.g. https://auth.example.com",
    )
    p.add_argument("--workers", type=int, metavar="N", help="server processes (default 1)")
    p.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis for rate limits shared by every process: redis://host:6379/0",
    )
    p.add_argument(
        "--no-migrate",
        action="store_true",
        help="do not apply database migrations at start; refuse to start if the schema is "
        "behind (config: auto_migrate: false; run `authgear db upgrade` as a deployment step)",
    )
    p.set_defaults(func=serve)
