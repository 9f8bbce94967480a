"""``authgear serve``: the auth server, in one process or several workers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from authgear.cli._common import CLIError, add_server_options, config_path, load, overrides

if TYPE_CHECKING:
    from authgear.server.config import Settings


def serve(args: argparse.Namespace) -> int:
    settings, first_run = load(args, create=True)
    config = settings.config
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.workers > 1 and config.resolver_port is not None:
        raise CLIError(
            "resolver_port needs workers = 1; with several workers the resolver is served on "
            "the main port (/_resolver/resolve)"
        )
    _banner(settings, first_run)
    if config.workers > 1:
        return _serve_workers(args, settings)
    with contextlib.suppress(KeyboardInterrupt):
        _run_event_loop(_serve_one(settings))
    return 0


def _banner(settings: Settings, first_run: bool) -> None:
    config = settings.config
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


async def _serve_one(settings: Settings) -> None:
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


def _serve_workers(args: argparse.Namespace, settings: Settings) -> int:
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
    os.environ.update(overrides(args))
    os.environ["AUTHGEAR_DATA_DIR"] = str(settings.data_dir)
    os.environ["AUTHGEAR_CONFIG"] = str(config_path(args, settings.data_dir))
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
    p.set_defaults(func=serve)
