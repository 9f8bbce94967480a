"""One small async face over two ways of running SQLAlchemy statements.

SQLite runs inline on the event loop: a statement on a local WAL database takes microseconds,
far less than a hop to a worker thread (aiosqlite), and since nothing awaits inside a
transaction, transactions of one process never interleave or wait on each other's locks.
Server databases (PostgreSQL) use SQLAlchemy's async engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, CursorResult, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.base import Executable


class Conn(Protocol):
    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> CursorResult[Any]: ...


class Database(Protocol):
    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``: which INSERT ... ON CONFLICT to build."""
        ...

    def begin(self) -> contextlib.AbstractAsyncContextManager[Conn]: ...
    def connect(self) -> contextlib.AbstractAsyncContextManager[Conn]: ...
    async def run_sync(self, fn: Callable[[Connection], None]) -> None: ...
    async def dispose(self) -> None: ...


class _InlineConn:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> CursorResult[Any]:
        return self._conn.execute(statement, parameters)


class InlineDatabase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return str(self.engine.dialect.name)

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Conn]:
        with self.engine.begin() as conn:
            yield _InlineConn(conn)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Conn]:
        with self.engine.connect() as conn:
            yield _InlineConn(conn)

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
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return str(self.engine.dialect.name)

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[Conn]:
        async with self.engine.begin() as conn:
            yield _AsyncConn(conn)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Conn]:
        async with self.engine.connect() as conn:
            yield _AsyncConn(conn)

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


def open_database(url: str, *, pool_size: int = 10) -> Database:
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
            connect_args = {"timeout": PG_CONNECT_TIMEOUT, "command_timeout": PG_COMMAND_TIMEOUT}
        return AsyncDatabase(
            create_async_engine(
                parsed,
                pool_pre_ping=True,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=PG_POOL_TIMEOUT,
                connect_args=connect_args,
            )
        )
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")
