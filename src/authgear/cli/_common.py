"""What the server-side commands share: where the data folder and config are, loading the
settings, opening the database, the CLI's audit actor, one-line errors and terminal output.

Server modules are imported inside functions: ``authgear login`` (the SDK's commands) must work
with the core install, which has no server dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import getpass
import json
import os
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from authgear.server.accounts import AccountService
    from authgear.server.admin.ops import AdminOps
    from authgear.server.config import Settings
    from authgear.server.storage import AdminRepository, Repository
    from authgear.server.storage.admin import Actor

DEFAULT_DATA_DIR = ".authgear"
T = TypeVar("T")


class CLIError(Exception):
    """Printed as one line (``authgear: <message>``), exit status 1."""


# -- arguments and settings -------------------------------------------------------------------


def add_server_options(p: argparse.ArgumentParser) -> None:
    """The options every command that reads the server's config takes."""
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the server's data folder (default ./.authgear, env AUTHGEAR_DATA_DIR)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default DATA_DIR/authgear.yaml, env AUTHGEAR_CONFIG)",
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL of the database (default: the config's database_url, else SQLite "
        "in the data folder; env AUTHGEAR_DATABASE_URL)",
    )


def data_dir(args: argparse.Namespace) -> Path:
    return Path(
        getattr(args, "data_dir", None) or os.environ.get("AUTHGEAR_DATA_DIR") or DEFAULT_DATA_DIR
    )


def config_path(args: argparse.Namespace, folder: Path) -> Path:
    from authgear.server.config import CONFIG_FILE

    explicit = getattr(args, "config", None) or os.environ.get("AUTHGEAR_CONFIG")
    return Path(explicit) if explicit else folder / CONFIG_FILE


def overrides(args: argparse.Namespace) -> dict[str, str]:
    """The environment as the settings see it: the process's, with command-line flags on top."""
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


def load(args: argparse.Namespace, *, create: bool = False) -> tuple[Settings, bool]:
    """The settings; ``create`` writes a commented config on first run (``serve``), keeping
    what the command line said (database, Redis, origin, workers). Refuses when this data
    folder's server uses another database than the one the command would.
    Returns the settings and whether this was the first run."""
    from authgear.server.config import ConfigError, default_config_text, load_settings

    folder = data_dir(args)
    path = config_path(args, folder)
    first_run = False
    if create and not path.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        host = getattr(args, "host", None) or os.environ.get("AUTHGEAR_HOST") or "127.0.0.1"
        port = getattr(args, "port", None)
        if port is None:
            port = int(os.environ.get("AUTHGEAR_PORT", 3000))
        text, _ = default_config_text(
            host,
            port,
            public_origin=getattr(args, "public_origin", None),
            database_url=getattr(args, "database_url", None),
            redis_url=getattr(args, "redis_url", None),
            workers=getattr(args, "workers", None) or 1,
        )
        write_private(path, text)
        first_run = True
    try:
        env = overrides(args)
        # Maintenance commands need no config file when told which database to use.
        missing_ok = not create and bool(
            env.get("AUTHGEAR_DATABASE_URL") or env.get("AUTHGEAR_DATABASE_URL_FILE")
        )
        settings = load_settings(folder, path, env, missing_ok=missing_ok)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    except ValueError as e:  # e.g. AUTHGEAR_PORT=abc on first run
        raise CLIError(str(e)) from None
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_same_database(settings)
    return settings, first_run


# The database `serve` last used from this data folder, without its password: a later
# command in the folder must use the same one (or it would act on a stray database).
DATABASE_MARKER = "server-database"


def check_same_database(settings: Settings) -> None:
    marker = settings.data_dir / DATABASE_MARKER
    try:
        recorded = marker.read_text(encoding="utf-8").strip()
    except OSError:
        return
    mine = settings.database_name
    if recorded and recorded != mine:
        config = settings.config_path or settings.data_dir / "authgear.yaml"
        raise CLIError(
            f"the server of {settings.data_dir} uses {recorded}, but this command would use "
            f"{mine}: point it at the same database (--database-url, AUTHGEAR_DATABASE_URL or "
            f"AUTHGEAR_DATABASE_URL_FILE, or database_url(_file) in {config}); if the server "
            f"moved to this database on purpose, delete {marker}"
        )


def record_database(settings: Settings) -> None:
    write_private(settings.data_dir / DATABASE_MARKER, settings.database_name + "\n")


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# -- the database -----------------------------------------------------------------------------


def migrate(settings: Settings) -> None:
    """Bring the schema up to date. Blocking: call it before starting an event loop."""
    from authgear.server.storage import migrate as migrations

    with database_errors(settings.database_url):
        migrations.upgrade(settings.database_url)


def require_current_schema(settings: Settings) -> None:
    """Refuse (one line) unless the database is at the schema this version needs."""
    from authgear.server.storage import migrate as migrations

    url = settings.database_url
    if migrations.sqlite_file_missing(url):
        raise CLIError(
            f"no database at {settings.database_name} yet: run `authgear serve` or "
            "`authgear db upgrade` first"
        )
    with database_errors(url):
        current = migrations.current_revision(url)
    head = migrations.head_revision()
    if current == head:
        return
    if current is not None and current not in migrations.known_revisions():
        raise CLIError(
            f"the database schema ({current}) is newer than this version of authgear knows "
            f"({head}): upgrade authgear"
        )
    raise CLIError(
        f"the database schema is at {current or 'nothing (empty)'}, this version needs {head}: "
        "run `authgear db upgrade` (or `authgear serve` without --no-migrate)"
    )


def prepare_database(settings: Settings, *, writes: bool) -> None:
    """Before a command touches the database: a read-only command never migrates (it needs
    the current schema); a command that writes migrates unless auto_migrate is off."""
    if writes and settings.config.auto_migrate:
        migrate(settings)
    else:
        require_current_schema(settings)


_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def mask_url(url: str) -> str:
    """A database or Redis URL fit to print: its password replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\1***@", url)


def _root_cause(e: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's wrappers and re-raises."""
    seen: set[int] = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "orig", None) or e.__cause__
        if not isinstance(inner, BaseException):
            break
        e = inner
    return e


def _reason(e: BaseException) -> str:
    root = _root_cause(e)
    if isinstance(root, ConnectionRefusedError):
        return "connection refused (is the database running, and is the host and port right?)"
    if isinstance(root, socket.gaierror):
        return "unknown host"
    if isinstance(root, TimeoutError):
        return "timed out connecting"
    text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    return mask_url(text)[:300]


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Errors of the database driver (unreachable, wrong password, no such database) as one
    line naming the database, not a traceback."""
    import sqlalchemy.exc

    from authgear.server.keys import KeyEncryptionError

    try:
        yield
    except CLIError:
        raise
    except KeyEncryptionError as e:
        raise CLIError(str(e)) from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError, ValueError) as e:
        # ValueError: a URL the driver cannot use (e.g. an unknown sslmode)
        raise CLIError(f"cannot use the database {mask_url(url)}: {_reason(e)}") from None
    except Exception as e:
        if type(e).__module__.startswith("asyncpg"):
            raise CLIError(f"cannot use the database {mask_url(url)}: {_reason(e)}") from None
        raise


def describe_error(e: BaseException) -> str:
    """An unexpected error as one line: its type and the first line of its message."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    detail = f": {mask_url(first)[:300]}" if first else ""
    return f"unexpected error {type(e).__name__}{detail} (--traceback shows where)"


class Stores:
    """The repositories of one command, its audit actor and the admin operations."""

    def __init__(self, settings: Settings) -> None:
        from authgear.server.accounts import AccountService
        from authgear.server.admin.ops import AdminOps
        from authgear.server.mail import MailService
        from authgear.server.ratelimit import MemoryRateLimiter
        from authgear.server.storage import open_repository

        self.settings = settings
        self.repo: Repository = open_repository(settings.database_url, pool_size=2, max_overflow=0)
        self.admin: AdminRepository = self.repo.admin
        # Account recovery (mail, password policy) for send-reset and set-password; building
        # it does no I/O (mail goes out only when a command submits one).
        self.accounts: AccountService = AccountService(
            config=settings.config,
            repo=self.repo,
            limiter=MemoryRateLimiter(False),
            mail=MailService(settings),
        )
        self.ops: AdminOps = AdminOps(self.repo, self.admin, self.accounts)
        self.actor: Actor = cli_actor()

    async def close(self) -> None:
        await self.repo.close()

    async def user(self, ref: str) -> Any:
        """A user by id or email; a one-line error when there is none."""
        user = await self.admin.get_user(ref) if "@" not in ref else None
        if user is None:
            user = await self.repo.get_user_by_email(ref)
        if user is None:
            raise CLIError(f"no such user: {clean(ref)}")
        return user


def with_stores(
    settings: Settings, body: Callable[[Stores], Awaitable[T]], *, writes: bool = True
) -> T:
    """Run ``body`` on the command's stores and close them; see :func:`prepare_database`."""
    prepare_database(settings, writes=writes)

    async def main() -> T:
        stores = Stores(settings)
        try:
            return await body(stores)
        finally:
            await stores.close()

    with database_errors(settings.database_url):
        return run(main())


def run(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(main)


def cli_actor() -> Actor:
    """The audit log's actor for a command run from this shell: the OS user and the host."""
    from authgear.server.storage.admin import Actor

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return Actor("cli", who, f"{who}@{socket.gethostname()}")


def read_password(args: argparse.Namespace) -> str:
    """From standard input with --password-stdin, else asked twice on the terminal."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CLIError("no terminal to ask for a password; pass --password-stdin")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != password:
        raise CLIError("the passwords do not match")
    return password


def ops_error(e: Exception) -> CLIError:
    """An admin operation's refusal as a CLI error (InvalidInput, EmailTaken)."""
    from authgear.server.storage import EmailTaken

    if isinstance(e, EmailTaken):
        return CLIError(f"a user with email {clean(str(e))} already exists")
    return CLIError(clean(str(e)))


# -- output -----------------------------------------------------------------------------------


def clean(value: str) -> str:
    """Text from users (emails, user agents, device names) fit for a terminal: control
    characters (an escape sequence could rewrite or hide what the admin sees) are shown
    escaped, e.g. ``\\x1b``."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: list[list[str]], header: list[str]) -> None:
    """Columns padded to their widest cell, under a header row (printed even when empty)."""
    rows = [[clean(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    print()
