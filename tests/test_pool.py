"""models/pool.py on PostgreSQL: connections are reused, handed to waiters in turn,
replaced when dead, and never reused after a cancelled query."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from models.db import asyncpg_dsn
from models.pool import ConnectionPool
from tests.conftest import USE_PG

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(not USE_PG, reason="PostgreSQL only"),
]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[ConnectionPool]:
    p = ConnectionPool(asyncpg_dsn(database_url), max_size=2)
    yield p
    await p.close()


async def _pid(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_a_released_connection_is_the_next_one_handed_out(pool: ConnectionPool) -> None:
    first = await pool.acquire()
    pid = await _pid(first)
    pool.release(first)
    again = await pool.acquire()
    assert await _pid(again) == pid
    assert (pool.size, pool.in_use) == (1, 1)
    pool.release(again)
    assert pool.in_use == 0


async def test_waiters_are_served_in_turn_when_the_pool_is_full(pool: ConnectionPool) -> None:
    a, b = await pool.acquire(), await pool.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        conn = await pool.acquire()
        order.append(n)
        pool.release(conn)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0.05)
    assert order == []  # both connections are out
    pool.release(a)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert pool.size == 2
    pool.release(b)


async def test_a_cancelled_waiter_does_not_lose_the_connection(pool: ConnectionPool) -> None:
    a, b = await pool.acquire(), await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    pool.release(a)  # handed to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs: it must give it back
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.in_use == 1
    c = await asyncio.wait_for(pool.acquire(), 1)
    pool.release(b)
    pool.release(c)
    assert pool.in_use == 0


async def test_a_connection_closed_by_the_server_is_replaced(
    pool: ConnectionPool, database_url: str
) -> None:
    conn = await pool.acquire()
    pid = await _pid(conn)
    pool.release(conn)
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    await asyncio.sleep(0.1)
    fresh = await pool.acquire()
    assert await _pid(fresh) != pid
    assert pool.size == 1
    pool.release(fresh)


async def test_a_connection_released_as_broken_is_not_reused(pool: ConnectionPool) -> None:
    conn = await pool.acquire()
    pid = await _pid(conn)
    query = asyncio.create_task(conn.fetchval("SELECT pg_sleep(5)"))
    await asyncio.sleep(0.05)
    query.cancel()
    with pytest.raises(asyncio.CancelledError):
        await query
    pool.release(conn, broken=True)
    assert pool.size == 0
    fresh = await pool.acquire()
    assert await _pid(fresh) != pid
    assert await fresh.fetchval("SELECT 1") == 1
    pool.release(fresh)


async def test_a_dropped_connection_lets_a_waiter_open_a_new_one(pool: ConnectionPool) -> None:
    a, b = await pool.acquire(), await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    pool.release(a, broken=True)
    c = await asyncio.wait_for(waiter, 5)
    assert await c.fetchval("SELECT 1") == 1
    assert pool.size == 2
    pool.release(b)
    pool.release(c)
