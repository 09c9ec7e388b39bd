"""The database engine and transactions.

On SQLite (the embedded default) writes open with BEGIN IMMEDIATE so that two writers
queue on the busy timeout instead of failing when one upgrades a read lock; reads keep
deferred transactions so they never wait on a writer (WAL).

On PostgreSQL reads run in autocommit: under READ COMMITTED every statement takes its own
snapshot anyway, so the BEGIN and ROLLBACK around a read session were two round trips
that bought nothing. A connection is pinged once when it leaves the pool (one round trip;
SQLAlchemy's pool_pre_ping wraps its ping in BEGIN/ROLLBACK: three).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


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


def _ping_on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # A connection that died in the pool (a database restart) is replaced, not handed out.
    try:
        dbapi_connection.run_async(lambda conn: conn.fetchrow(";"))
    except Exception as exc:
        raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


def create_engine_for(url: str, *, pool_size: int = 10, immediate: bool = False) -> AsyncEngine:
    kwargs: dict[str, Any] = {}
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if ":memory:" in url or make_url(url).database in (None, ""):
            raise ValueError("DATABASE_URL: an in-memory SQLite database is not supported")
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
    # Statement parameters can hold password hashes: never put them in logs or errors.
    engine = create_async_engine(url, hide_parameters=True, **kwargs)
    if is_sqlite:
        sync = engine.sync_engine
        event.listen(sync, "connect", _sqlite_pragmas)
        event.listen(sync, "connect", _take_over_transactions)
        begin_sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        event.listen(sync, "begin", lambda conn: conn.exec_driver_sql(begin_sql))
    else:
        event.listen(engine.sync_engine, "checkout", _ping_on_checkout)
    return engine


class Database:
    """Sessions for reads and for write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = create_engine_for(url, pool_size=pool_size)
        self.write_engine = (
            create_engine_for(url, pool_size=pool_size, immediate=True)
            if self.is_sqlite
            else self.engine
        )
        read_engine = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._read_sessions = async_sessionmaker(
            read_engine, class_=AsyncSession, expire_on_commit=False
        )
        self._write_sessions = async_sessionmaker(
            self.write_engine, class_=AsyncSession, expire_on_commit=False
        )

    @property
    def engines(self) -> tuple[AsyncEngine, ...]:
        return (
            (self.engine,)
            if self.write_engine is self.engine
            else (
                self.engine,
                self.write_engine,
            )
        )

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
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def pool_in_use(self) -> int:
        pool = self.engine.pool
        checked_out = getattr(pool, "checkedout", None)
        return int(checked_out()) if callable(checked_out) else 0

    async def dispose(self) -> None:
        for engine in self.engines:
            await engine.dispose()


def null_pool_engine(url: str) -> AsyncEngine:
    """A short-lived engine for one-off work (migrations, CLI)."""
    return create_async_engine(url, poolclass=NullPool, hide_parameters=True)
