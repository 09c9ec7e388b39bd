"""The database engine and transactions.

On SQLite (the embedded default) writes open with BEGIN IMMEDIATE so that two writers
queue on the busy timeout instead of failing when one upgrades a read lock; reads keep
deferred transactions so they never wait on a writer (WAL).

Two ways in. `connect()` and `begin()` hand out driver connections for the statements of
`models.sql`: what the request paths use. Each backend has one pool. On PostgreSQL it is
models/pool.py, of asyncpg connections that each keep their prepared statements. On
SQLite it is the SQLAlchemy engine's, of aiosqlite connections carrying the engine's
pragmas. `read()` and `transaction()` are ORM sessions, for tools and tests: on SQLite
they share that pool; on PostgreSQL they open a connection of their own each time
(NullPool), so there is no second pool to size, watch or drain.

On PostgreSQL reads run in autocommit: under READ COMMITTED every statement takes its own
snapshot anyway, so a BEGIN and ROLLBACK around a read would be two round trips that buy
nothing. The asyncpg pool replaces a connection that the server closed when it is next
acquired.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import event, literal_column, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from infra.tasks import BACKGROUND
from models.pool import ConnectionPool
from models.sql import (
    Connection,
    PgConnection,
    SqliteConnection,
    Statement,
    StatementListener,
)

# What a failing database raises, whichever way in (for callers that report it, not crash).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlite3.Error,
    OSError,
)

SQLITE_BUSY_TIMEOUT_MS = 30_000
POOL_CLOSE_TIMEOUT_SECONDS = 5.0
_PING = Statement(lambda d: select(literal_column("1")))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _take_over_transactions(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, say when a transaction begins.
    dbapi_connection.isolation_level = None


# An execution option of the engine that ORM write sessions use on SQLite.
_IMMEDIATE = "sqlite_begin_immediate"


def _begin(conn: Any) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine_for(url: str) -> AsyncEngine:
    """SQLite: the engine whose pool the request paths share. PostgreSQL: an engine
    without a pool, for ORM sessions (tools, tests); requests use models/pool.py."""
    kwargs: dict[str, Any] = {}
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if ":memory:" in url or make_url(url).database in (None, ""):
            raise ValueError("DATABASE_URL: an in-memory SQLite database is not supported")
    else:
        kwargs["poolclass"] = NullPool
    # Statement parameters can hold password hashes: never put them in logs or errors.
    engine = create_async_engine(url, hide_parameters=True, **kwargs)
    if is_sqlite:
        sync = engine.sync_engine
        event.listen(sync, "connect", _sqlite_pragmas)
        event.listen(sync, "connect", _take_over_transactions)
        event.listen(sync, "begin", _begin)
    return engine


def _may_be_busy(exc: BaseException) -> bool:
    """Whether a block that ended with `exc` may have left a query running on its
    connection: cancelled or timed out (other errors come between statements, or are the
    server's answer to one)."""
    return not isinstance(exc, Exception) or isinstance(exc, TimeoutError)


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Database:
    """Driver connections for the request paths; ORM sessions for everything else."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.pool_size = pool_size
        self._listeners: list[StatementListener] = []
        self._pg_pool: ConnectionPool | None = None
        self.engine = create_engine_for(url)
        read_engine = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        write_engine = (
            self.engine.execution_options(**{_IMMEDIATE: True}) if self.is_sqlite else self.engine
        )
        self._read_sessions = async_sessionmaker(
            read_engine, class_=AsyncSession, expire_on_commit=False
        )
        self._write_sessions = async_sessionmaker(
            write_engine, class_=AsyncSession, expire_on_commit=False
        )

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Connection]:
        """A connection for reads: each statement runs on its own (autocommit)."""
        if self.is_sqlite:
            async with self.engine.connect() as sa_conn:
                raw = await sa_conn.get_raw_connection()
                yield SqliteConnection(raw.driver_connection, self._listeners)
            return
        pool = self._pg()
        conn = await pool.acquire()
        try:
            yield PgConnection(conn, self._listeners)
        except BaseException as exc:
            pool.release(conn, broken=_may_be_busy(exc))
            raise
        pool.release(conn)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Connection]:
        """A connection in a write transaction: committed on success, rolled back on error.
        On SQLite it begins IMMEDIATE: writers queue on the busy timeout."""
        if self.is_sqlite:
            async with self.engine.connect() as sa_conn:
                raw = await sa_conn.get_raw_connection()
                conn = SqliteConnection(raw.driver_connection, self._listeners)
                await conn.run_script("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    await conn.run_script("ROLLBACK")
                    raise
                await conn.run_script("COMMIT")
            return
        pool = self._pg()
        pg_conn = await pool.acquire()
        try:
            async with pg_conn.transaction():
                yield PgConnection(pg_conn, self._listeners)
        except BaseException as exc:
            pool.release(pg_conn, broken=_may_be_busy(exc))
            raise
        pool.release(pg_conn)

    def _pg(self) -> ConnectionPool:
        # Nothing connects until a request needs it: a database that is down at startup
        # is tried again by the next request.
        if self._pg_pool is None:
            self._pg_pool = ConnectionPool(
                asyncpg_dsn(self.url),
                max_size=self.pool_size,
                server_settings={"application_name": "order-service"},
            )
        return self._pg_pool

    @contextlib.contextmanager
    def recording_statements(self) -> Iterator[list[str]]:
        """Every statement run while the block runs, by either way in (BEGIN, COMMIT
        and pragmas left out, and the app's background work: infra.tasks.BACKGROUND)."""
        statements: list[str] = []

        def record(sql: str) -> None:
            if BACKGROUND.get():
                return  # the relay's poll, say: not what the block ran
            if not sql.lstrip().upper().startswith(("BEGIN", "PRAGMA", "COMMIT", "ROLLBACK")):
                statements.append(sql)

        def record_orm(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            record(statement)

        self._listeners.append(record)
        event.listen(self.engine.sync_engine, "before_cursor_execute", record_orm)
        try:
            yield statements
        finally:
            self._listeners.remove(record)
            event.remove(self.engine.sync_engine, "before_cursor_execute", record_orm)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction: committed on success, rolled back on error."""
        async with self._write_sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.connect() as conn:
            await conn.value(_PING)

    def pool_in_use(self) -> int:
        """Connections of the request pool in use."""
        if not self.is_sqlite:
            return self._pg_pool.in_use if self._pg_pool is not None else 0
        checked_out = getattr(self.engine.pool, "checkedout", None)
        return int(checked_out()) if callable(checked_out) else 0

    async def dispose(self) -> None:
        pool, self._pg_pool = self._pg_pool, None
        if pool is not None:
            await pool.close(give_up_after=POOL_CLOSE_TIMEOUT_SECONDS)
        await self.engine.dispose()


def null_pool_engine(url: str) -> AsyncEngine:
    """A short-lived engine for one-off work (migrations, CLI)."""
    return create_async_engine(url, poolclass=NullPool, hide_parameters=True)
