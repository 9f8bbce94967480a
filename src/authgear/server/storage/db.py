"""One small async face over two ways of running SQLAlchemy statements.

SQLite runs inline on the event loop: a statement on a local WAL database takes microseconds,
far less than a hop to a worker thread (aiosqlite), and since nothing awaits inside a
transaction, transactions of one process never interleave or wait on each other's locks.
Server databases (PostgreSQL) use SQLAlchemy's async engine.
"""

from __future__ import annotations

import contextlib
import sqlite3
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, CursorResult, Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Select
from sqlalchemy.sql.base import Executable


class Conn(Protocol):
    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> CursorResult[Any]: ...


@dataclass
class PoolStats:
    """Connections of one process: checked out now, and callers waiting for one."""

    size: int = 0
    in_use: int = 0
    waiting: int = 0


class Database(Protocol):
    stats: PoolStats

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``: which INSERT ... ON CONFLICT to build."""
        ...

    def begin(self) -> contextlib.AbstractAsyncContextManager[Conn]: ...
    def connect(self) -> contextlib.AbstractAsyncContextManager[Conn]: ...
    async def fetch_first(
        self, statement: Select[Any], parameters: dict[str, Any]
    ) -> Mapping[str, Any] | None:
        """The first row of a hot-path SELECT (column key → value), outside a transaction."""
        ...

    async def run_sync(self, fn: Callable[[Connection], None]) -> None: ...
    async def dispose(self) -> None: ...


@contextlib.asynccontextmanager
async def _counted(
    stats: PoolStats, acquire: contextlib.AbstractAsyncContextManager[Any]
) -> AsyncIterator[Any]:
    """Count the caller as waiting until it has a connection, then as using one."""
    stats.waiting += 1
    acquired = False
    try:
        async with acquire as conn:
            stats.waiting -= 1
            acquired = True
            stats.in_use += 1
            try:
                yield conn
            finally:
                stats.in_use -= 1
    finally:
        if not acquired:
            stats.waiting -= 1


class _InlineConn:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> CursorResult[Any]:
        return self._conn.execute(statement, parameters)


class RawSelect:
    """A SELECT compiled once for SQLite and run on the driver's own connection, its values
    converted by the columns' own SQLAlchemy result processors (JSON, booleans). On the
    refresh grant's hot path, SQLAlchemy's per-execution work (cache lookup, execution
    context, result wrapping) cost more than SQLite's (docs/benchmarks.md)."""

    def __init__(self, statement: Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup or ())
        columns = compiled._result_columns  # (keyname, name, objects, type) per column
        self.keys = tuple(c[0] for c in columns)
        self.processors = tuple(c[3]._cached_result_processor(dialect, None) for c in columns)

    def row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        return {
            key: value if process is None else process(value)
            for key, process, value in zip(self.keys, self.processors, values, strict=True)
        }


class InlineDatabase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Nothing awaits inside a transaction here: nobody ever waits for a connection.
        self.stats = PoolStats(size=1)
        self._raw: dict[int, tuple[Select[Any], RawSelect]] = {}

    async def fetch_first(
        self, statement: Select[Any], parameters: dict[str, Any]
    ) -> Mapping[str, Any] | None:
        found = self._raw.get(id(statement))
        if found is None or found[0] is not statement:
            found = (statement, RawSelect(statement, self.engine.dialect))
            self._raw[id(statement)] = found
        raw = found[1]
        values = [parameters[name] for name in raw.names]
        connection = self.engine.raw_connection()
        try:
            cursor = connection.driver_connection.execute(raw.sql, values)  # type: ignore[union-attr]
            row = cursor.fetchone()
            cursor.close()
        except sqlite3.Error as e:
            # The same exception SQLAlchemy raises for it (a 503 for a locked database).
            raise DBAPIError.instance(raw.sql, values, e, sqlite3.Error) from e
        finally:
            connection.close()
        return None if row is None else raw.row(row)

    @property
    def dialect(self) -> str:
        return str(self.engine.dialect.name)

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Conn]:
        with self.engine.begin() as conn:
            self.stats.in_use += 1
            try:
                yield _InlineConn(conn)
            finally:
                self.stats.in_use -= 1

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Conn]:
        with self.engine.connect() as conn:
            self.stats.in_use += 1
            try:
                yield _InlineConn(conn)
            finally:
                self.stats.in_use -= 1

    async def run_sync(self, fn: Callable[[Connection], None]) -> None:
        with self.engine.begin() as conn:
            fn(conn)

    async def dispose(self) -> None:
        self.engine.dispose()


class _AsyncConn:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> CursorResult[Any]:
        return await self._conn.execute(statement, parameters)


class AsyncDatabase:
    def __init__(self, engine: AsyncEngine, size: int = 0) -> None:
        self.engine = engine
        self.stats = PoolStats(size=size)

    @property
    def dialect(self) -> str:
        return str(self.engine.dialect.name)

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Conn]:
        async with _counted(self.stats, self.engine.begin()) as conn:
            yield _AsyncConn(conn)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Conn]:
        async with _counted(self.stats, self.engine.connect()) as conn:
            yield _AsyncConn(conn)

    async def fetch_first(
        self, statement: Select[Any], parameters: dict[str, Any]
    ) -> Mapping[str, Any] | None:
        async with self.connect() as conn:
            row = (await conn.execute(statement, parameters)).mappings().first()
        return None if row is None else dict(row)

    async def run_sync(self, fn: Callable[[Connection], None]) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(fn)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# PostgreSQL: fail fast when the database is away (a request gets 503 within seconds instead of
# hanging), and drop dead pooled connections once it is back.
PG_CONNECT_TIMEOUT = 2.0
PG_COMMAND_TIMEOUT = 10.0
PG_POOL_TIMEOUT = 5.0


# libpq's TLS parameters, which asyncpg does not take from a SQLAlchemy URL: translated into
# the ``ssl`` argument it wants, so a URL written for psql works here too.
_LIBPQ_TLS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "ssl")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def tls_connect_args(url: URL) -> tuple[URL, dict[str, Any]]:
    """``?sslmode=...&sslrootcert=...`` (libpq's names) as asyncpg's ``ssl`` argument: a
    mode name, or an SSLContext when certificates are named. Returns the URL without them."""
    query = dict(url.query)
    given = {k: query.pop(k) for k in _LIBPQ_TLS if k in query}
    if not given:
        return url, {}
    values = {k: v if isinstance(v, str) else v[-1] for k, v in given.items()}
    mode = values.get("sslmode") or values.get("ssl") or "prefer"
    if mode not in SSL_MODES:
        raise ValueError(f"sslmode must be one of {', '.join(SSL_MODES)}, not {mode!r}")
    stripped = url.set(query=query)
    files = {k: values[k] for k in ("sslrootcert", "sslcert", "sslkey") if k in values}
    if not files or mode in ("disable", "allow", "prefer"):
        return stripped, {"ssl": mode}
    context = ssl.create_default_context(cafile=files.get("sslrootcert"))
    if mode in ("require", "verify-ca"):
        # libpq: require checks nothing (unless a root cert is given: then as verify-ca);
        # verify-ca checks the chain but not the host name.
        context.check_hostname = False
        if mode == "require" and "sslrootcert" not in files:
            context.verify_mode = ssl.CERT_NONE
    if "sslcert" in files:
        context.load_cert_chain(
            files["sslcert"], files.get("sslkey"), password=values.get("sslpassword")
        )
    return stripped, {"ssl": context}


def open_database(url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> Database:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(parsed.set(drivername="sqlite"), connect_args={"timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return InlineDatabase(engine)
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+asyncpg")
        connect_args: dict[str, Any] = {}
        if parsed.get_driver_name() == "asyncpg":
            parsed, connect_args = tls_connect_args(parsed)
            connect_args |= {"timeout": PG_CONNECT_TIMEOUT, "command_timeout": PG_COMMAND_TIMEOUT}
        overflow = pool_size if max_overflow is None else max_overflow
        async_engine = create_async_engine(
            parsed,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=overflow,
            pool_timeout=PG_POOL_TIMEOUT,
            connect_args=connect_args,
        )
        return AsyncDatabase(async_engine, size=pool_size + overflow)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")
