"""Migration 0005_orders_at_scale on a database that already holds orders: the counts are
filled in from them, in batches on PostgreSQL while writers change, add and delete orders,
and agree with count(*) afterwards; the triggers keep them from then on. Migration
0007_order_month_stats: the month figures, filled in from the day figures while writers
wait, agree with the orders, and the triggers keep them."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from models.db import null_pool_engine
from tests.conftest import USE_PG
from tests.test_migration_back_office import _migrate, _rows, _run, empty_database

__all__ = ["empty_database"]  # the fixture, used by name below

STATUSES = ("PENDING", "PAID", "SHIPPED", "DELIVERED", "CANCELLED")
INSERT = (
    "INSERT INTO orders (user_id, status, version, client_token, items_fingerprint, "
    "amount_cents, created_at, updated_at) VALUES (:user, :status, 1, :token, 'f', 1000, "
    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)
BY_STATUS = (
    "SELECT status, sum(orders) FROM order_status_counts GROUP BY status "
    "HAVING sum(orders) <> 0 ORDER BY status"
)
BY_STATUS_COUNTED = "SELECT status, count(*) FROM orders GROUP BY status ORDER BY status"
BY_USER = (
    "SELECT user_id, status, orders FROM user_order_counts WHERE orders <> 0 "
    "ORDER BY user_id, status"
)
BY_USER_COUNTED = (
    "SELECT user_id, status, count(*) FROM orders GROUP BY user_id, status ORDER BY user_id, status"
)


async def _agree(url: str) -> None:
    def plain(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
        return [tuple(int(v) if not isinstance(v, str) else v for v in r) for r in rows]

    assert plain(await _rows(url, BY_STATUS)) == plain(await _rows(url, BY_STATUS_COUNTED))
    assert plain(await _rows(url, BY_USER)) == plain(await _rows(url, BY_USER_COUNTED))


async def _backfill_waiting(engine: AsyncEngine, migration: asyncio.Task[None]) -> int:
    """Waits (about 30 s at most) for a backfill batch's FOR SHARE to wait for a row lock;
    returns the backfill's done_below then (the batches below it are done)."""
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND query LIKE '%FOR SHARE%'"
    )
    for _ in range(600):
        assert not migration.done(), "the migration ended without waiting for the held order"
        async with engine.connect() as conn:
            if (await conn.execute(text(waiting))).scalar_one():
                done_below = "SELECT done_below FROM order_counts_backfill"
                return int((await conn.execute(text(done_below))).scalar_one())
        await asyncio.sleep(0.05)
    raise AssertionError("the backfill never waited at the held order's batch")


async def test_counts_are_filled_in_while_writers_race_the_backfill(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = empty_database
    monkeypatch.setenv("ORDER_COUNTS_BATCH", "7")
    await _migrate(url, "0004_order_events")
    users = [
        (
            "INSERT INTO users (id, email, password_hash, role, created_at) VALUES "  # noqa: S608
            f"({n}, 'm{n}@example.com', 'x', 'USER', CURRENT_TIMESTAMP)"
        )
        for n in (1, 2, 3)
    ]
    rng = random.Random(5)
    seeded = [
        (INSERT, {"user": rng.choice((1, 2, 3)), "status": rng.choice(STATUSES), "token": f"s{n}"})
        for n in range(300)
    ]
    await _run(url, *users, *seeded)
    engine = null_pool_engine(url)
    # PostgreSQL: a transaction of ours holds one order's row lock, so the backfill stops
    # at that order's batch (its FOR SHARE waits) with the batches below it done and those
    # above it to come; the writers go on meanwhile, changing orders on both sides and
    # adding new ones, then the lock goes and they go on until the migration ends. No
    # timing decides whether they raced it. (SQLite: the migration holds the one writer's
    # lock, so there is nothing to race.)
    held, batch = 150, 7
    blocked = range(held - held % batch, held - held % batch + batch)
    holder = await engine.connect() if USE_PG else None
    if holder is not None:
        await holder.execute(text("SELECT id FROM orders WHERE id = :id FOR UPDATE"), {"id": held})
    migration = asyncio.create_task(_migrate(url, "head"))
    writes = 0
    unheld = [n for n in range(1, 320) if n not in blocked]

    async def write() -> None:
        nonlocal writes
        order_id = rng.choice(unheld)
        kind = rng.choice(("move", "move", "owner", "delete", "insert"))
        async with engine.begin() as conn:
            if kind == "move":
                await conn.execute(
                    text("UPDATE orders SET status = :status WHERE id = :id"),
                    {"id": order_id, "status": rng.choice(STATUSES)},
                )
            elif kind == "owner":
                await conn.execute(
                    text("UPDATE orders SET user_id = :user WHERE id = :id"),
                    {"id": order_id, "user": rng.choice((1, 2, 3))},
                )
            elif kind == "delete":
                await conn.execute(text("DELETE FROM orders WHERE id = :id"), {"id": order_id})
            else:
                await conn.execute(
                    text(INSERT), {"user": 2, "status": "PENDING", "token": f"w{writes}"}
                )
        writes += 1

    try:
        if holder is not None:
            # The batches below the held one done, the held one waiting.
            assert await _backfill_waiting(engine, migration) == blocked.start
            for _ in range(40):
                await write()
            await holder.close()  # rolls back: the lock goes
            holder = None
            while not migration.done():
                await write()
        await migration
    finally:
        if holder is not None:
            await holder.close()
        if not migration.done():  # a failed check above: stop it rather than leave it
            migration.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await migration
        await engine.dispose()
    assert writes >= 40 or not USE_PG
    await _agree(url)
    if USE_PG:
        done_below, horizon = (
            await _rows(url, "SELECT done_below, horizon FROM order_counts_backfill")
        )[0]
        assert int(done_below) > int(horizon) >= 300
    # From now on the triggers keep them.
    await _run(
        url,
        "UPDATE orders SET status = 'PAID' WHERE id IN (SELECT id FROM orders WHERE status = 'PENDING' LIMIT 5)",
        "UPDATE orders SET status = status WHERE id = 10",
        "DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY id LIMIT 3)",
        (INSERT, {"user": 3, "status": "SHIPPED", "token": "after"}),
    )
    await _agree(url)


# --- 0007_order_month_stats ---------------------------------------------------------------

MONTHS_PG = (
    "SELECT to_char(month, 'YYYY-MM'), status, sum(orders) FROM order_month_stats "
    "GROUP BY 1, 2 HAVING sum(orders) <> 0 ORDER BY 1, 2"
)
MONTHS_COUNTED_PG = (
    "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM'), status, count(*) FROM orders "
    "GROUP BY 1, 2 ORDER BY 1, 2"
)
MONTHS_SQLITE = (
    "SELECT substr(month, 1, 7), status, sum(orders) FROM order_month_stats "
    "GROUP BY 1, 2 HAVING sum(orders) <> 0 ORDER BY 1, 2"
)
MONTHS_COUNTED_SQLITE = (
    "SELECT strftime('%Y-%m', created_at), status, count(*) FROM orders GROUP BY 1, 2 ORDER BY 1, 2"
)
STAMPED = (
    "INSERT INTO orders (user_id, status, version, client_token, items_fingerprint, "
    "amount_cents, created_at, updated_at) VALUES (:user, :status, 1, :token, 'f', 1000, "
    ":at, :at)"
)


async def _months_agree(url: str) -> None:
    kept = await _rows(url, MONTHS_PG if USE_PG else MONTHS_SQLITE)
    counted = await _rows(url, MONTHS_COUNTED_PG if USE_PG else MONTHS_COUNTED_SQLITE)
    assert [(m, s, int(str(n))) for m, s, n in kept] == [(m, s, int(str(n))) for m, s, n in counted]
    assert kept


async def test_month_figures_are_filled_in_from_the_days_while_writers_wait(
    empty_database: str,
) -> None:
    url = empty_database
    await _migrate(url, "0006_counts_at_commit")
    await _run(
        url,
        "INSERT INTO users (id, email, password_hash, role, created_at) VALUES "
        "(1, 'm1@example.com', 'x', 'USER', CURRENT_TIMESTAMP)",
    )
    rng = random.Random(6)
    start = datetime(2025, 11, 30, 23, 0, tzinfo=UTC)

    def stamped(token: str) -> tuple[str, dict[str, object]]:
        at = start + timedelta(hours=rng.randrange(24 * 70), microseconds=rng.randrange(10**6))
        if not USE_PG:
            at = at.replace(tzinfo=None)  # SQLite: the UTC wall clock, as the app stores it
        params = {"user": 1, "status": rng.choice(STATUSES), "token": token, "at": at}
        return STAMPED, params

    await _run(url, *(stamped(f"s{n}") for n in range(200)))
    migration = asyncio.create_task(_migrate(url, "head"))
    writes = 0
    while not migration.done() and USE_PG:  # they wait for the migration's commit
        await _run(url, stamped(f"w{writes}"), "UPDATE orders SET status = 'PAID' WHERE id = 7")
        writes += 1
    await migration
    await _months_agree(url)
    # From now on the triggers keep them: status and creation-time changes, deletes.
    moved = (start + timedelta(days=40)).replace(tzinfo=None if not USE_PG else UTC)
    await _run(
        url,
        "UPDATE orders SET status = 'SHIPPED' WHERE id IN (SELECT id FROM orders WHERE status = 'PENDING' LIMIT 5)",
        ("UPDATE orders SET created_at = :at WHERE id IN (3, 4, 5)", {"at": moved}),
        "UPDATE orders SET status = status WHERE id = 10",
        "DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY id LIMIT 3)",
        stamped("after"),
    )
    await _months_agree(url)
    await _migrate(url, "0006_counts_at_commit", down=True)
    assert not await _present_table(url, "order_month_stats")


async def _present_table(url: str, name: str) -> bool:
    sql = (
        f"SELECT to_regclass('{name}') IS NOT NULL"
        if USE_PG
        else f"SELECT count(*) FROM sqlite_master WHERE name = '{name}'"  # noqa: S608
    )
    return bool((await _rows(url, sql))[0][0])
