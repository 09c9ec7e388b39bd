"""The database layer on PostgreSQL: reads without transactions, dead pooled connections,
one pool."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from models.db import Database
from models.sql import Statement
from tests.conftest import USE_PG


def _sql(sql: str) -> Statement:
    return Statement(lambda d: text(sql))


pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(not USE_PG, reason="PostgreSQL only"),
]


def _dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def test_a_read_session_runs_each_statement_on_its_own(database_url: str) -> None:
    db = Database(database_url, pool_size=2)
    try:
        async with db.read() as session:
            first = (await session.execute(text("SELECT now()"))).scalar_one()
            await asyncio.sleep(0.01)
            second = (await session.execute(text("SELECT now()"))).scalar_one()
        assert second > first  # no transaction: now() moves with each statement
        async with db.transaction() as session:
            first = (await session.execute(text("SELECT now()"))).scalar_one()
            await asyncio.sleep(0.01)
            second = (await session.execute(text("SELECT now()"))).scalar_one()
        assert second == first  # one transaction
    finally:
        await db.dispose()


async def test_orm_sessions_keep_no_second_pool(database_url: str) -> None:
    """Requests use the asyncpg pool; ORM sessions (tools, tests) connect each time and
    leave nothing open behind them."""
    db = Database(database_url, pool_size=2)
    admin = await asyncpg.connect(_dsn(database_url))
    count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orm-probe'"
    try:
        assert isinstance(db.engine.pool, NullPool)
        async with db.read() as session:
            await session.execute(text("SET application_name = 'orm-probe'"))
            assert await admin.fetchval(count) == 1
        for _ in range(50):
            if await admin.fetchval(count) == 0:
                break
            await asyncio.sleep(0.1)
        assert await admin.fetchval(count) == 0
        async with db.connect() as conn:
            assert await conn.value(_sql("SELECT 1")) == 1
        assert db.pool_in_use() == 0
    finally:
        await admin.close()
        await db.dispose()


async def test_direct_connections_killed_by_the_server_are_replaced(database_url: str) -> None:
    db = Database(database_url, pool_size=1)
    admin = await asyncpg.connect(_dsn(database_url))
    pid = _sql("SELECT pg_backend_pid()")
    try:
        async with db.connect() as conn:
            before = await conn.value(pid)
        await admin.execute("SELECT pg_terminate_backend($1)", before)
        await asyncio.sleep(0.1)
        async with db.connect() as conn:
            after = await conn.value(pid)
        assert after != before
        await admin.execute("SELECT pg_terminate_backend($1)", after)
        await asyncio.sleep(0.1)
        async with db.begin() as conn:
            assert await conn.value(_sql("SELECT 1")) == 1
    finally:
        await admin.close()
        await db.dispose()


async def test_direct_connections_keep_no_transaction_open_after_an_error(
    database_url: str,
) -> None:
    db = Database(database_url, pool_size=1)
    savepoint = _sql("SAVEPOINT probe")  # refused outside a transaction block
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with db.begin() as conn:
                await conn.value(_sql("SELECT 1 / 0"))
        # The one pooled connection comes back outside any transaction (autocommit).
        async with db.connect() as conn:
            with pytest.raises(asyncpg.NoActiveSQLTransactionError):
                await conn.execute(savepoint)
    finally:
        await db.dispose()
