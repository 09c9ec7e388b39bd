"""The database layer on PostgreSQL: reads without transactions, dead pooled connections."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text

from models.db import Database
from models.sql import Statement
from tests.conftest import USE_PG

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


async def test_pooled_connections_killed_by_the_server_are_replaced(database_url: str) -> None:
    db = Database(database_url, pool_size=2)
    admin = await asyncpg.connect(_dsn(database_url))
    try:
        async with db.read() as session:
            before = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        # A database restart, as the pool sees it: its idle connection is gone.
        await admin.execute("SELECT pg_terminate_backend($1)", before)
        await asyncio.sleep(0.1)
        async with db.read() as session:
            after = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert after != before
        await admin.execute("SELECT pg_terminate_backend($1)", after)
        await asyncio.sleep(0.1)
        async with db.transaction() as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await admin.close()
        await db.dispose()


async def test_direct_connections_killed_by_the_server_are_replaced(database_url: str) -> None:
    db = Database(database_url, pool_size=1)
    admin = await asyncpg.connect(_dsn(database_url))
    pid = Statement("SELECT pg_backend_pid()")
    try:
        async with db.connect() as conn:
            before = await conn.fetchval(pid)
        await admin.execute("SELECT pg_terminate_backend($1)", before)
        await asyncio.sleep(0.1)
        async with db.connect() as conn:
            after = await conn.fetchval(pid)
        assert after != before
        await admin.execute("SELECT pg_terminate_backend($1)", after)
        await asyncio.sleep(0.1)
        async with db.begin() as conn:
            assert await conn.fetchval(Statement("SELECT 1")) == 1
    finally:
        await admin.close()
        await db.dispose()


async def test_direct_connections_keep_no_transaction_open_after_an_error(
    database_url: str,
) -> None:
    db = Database(database_url, pool_size=1)
    savepoint = Statement("SAVEPOINT probe")  # refused outside a transaction block
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with db.begin() as conn:
                await conn.fetchval(Statement("SELECT 1 / 0"))
        # The one pooled connection comes back outside any transaction (autocommit).
        async with db.connect() as conn:
            with pytest.raises(asyncpg.NoActiveSQLTransactionError):
                await conn.execute(savepoint)
    finally:
        await db.dispose()
