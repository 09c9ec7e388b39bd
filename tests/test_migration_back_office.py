"""Migration 0003_back_office on a database that already holds orders: the day figures are
filled from them, the triggers keep them from then on, and the downgrade undoes it all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from models.db import null_pool_engine
from models.migrate import alembic_config
from tests.conftest import PG_URL, USE_PG, _create_pg_database, _drop_pg_database

FIGURES = (
    "SELECT CAST(day AS VARCHAR), status, sum(orders), sum(amount_cents) FROM order_day_stats "
    "GROUP BY day, status HAVING sum(orders) > 0 ORDER BY 1, 2"
)


def _by_hand(postgres: bool) -> str:
    if postgres:
        return (
            "SELECT CAST(CAST((created_at AT TIME ZONE 'UTC') AS DATE) AS VARCHAR), status, "
            "count(*), sum(amount_cents) FROM orders "
            "GROUP BY CAST((created_at AT TIME ZONE 'UTC') AS DATE), status ORDER BY 1, 2"
        )
    return (
        "SELECT CAST(date(created_at) AS VARCHAR), status, count(*), sum(amount_cents) "
        "FROM orders GROUP BY date(created_at), status ORDER BY 1, 2"
    )


INSERT_ORDER = (
    "INSERT INTO orders (id, user_id, status, version, client_token, items_fingerprint, "
    "amount_cents, created_at, updated_at) VALUES (:id, 1, :status, 1, :token, 'f', :amount, "
    ":created, :created)"
)


@pytest.fixture
async def empty_database(tmp_path: Path) -> AsyncIterator[str]:
    if USE_PG:
        url = await _create_pg_database(PG_URL)
        yield url
        await _drop_pg_database(url)
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}"


async def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    engine = null_pool_engine(url)
    try:
        async with engine.connect() as conn:

            def run(sync_conn: object) -> None:
                cfg = alembic_config(url)
                cfg.attributes["connection"] = sync_conn
                (command.downgrade if down else command.upgrade)(cfg, revision)

            await conn.run_sync(run)
            await conn.commit()
    finally:
        await engine.dispose()


async def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = null_pool_engine(url)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql))).all()]
    finally:
        await engine.dispose()


Statement = str | tuple[str, dict[str, object]]


async def _run(url: str, *statements: Statement) -> None:
    engine = null_pool_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                sql, params = statement if isinstance(statement, tuple) else (statement, {})
                await conn.execute(text(sql), params)
    finally:
        await engine.dispose()


async def test_existing_orders_are_counted_and_the_downgrade_undoes_it(
    empty_database: str,
) -> None:
    url = empty_database
    await _migrate(url, "0002")
    orders = [
        ("2026-11-30 23:59:59+00:00", "PAID", 1500),
        ("2026-12-01 00:00:00+00:00", "PAID", 2500),
        ("2026-12-01 10:00:00+00:00", "PENDING", 700),
        ("2026-12-01 22:30:00-05:00", "CANCELLED", 900),  # 2026-12-02 in UTC
    ]
    statements: list[Statement] = [
        "INSERT INTO users (id, email, password_hash, role, created_at) VALUES "
        "(1, 'm@example.com', 'x', 'USER', CURRENT_TIMESTAMP)"
    ]
    for n, (created, status, amount) in enumerate(orders, start=1):
        params = {"id": n, "status": status, "token": f"t{n}", "amount": amount}
        statements.append((INSERT_ORDER, {**params, "created": _stamp(created)}))
    await _run(url, *statements)

    await _migrate(url, "head")

    expected = [
        ("2026-11-30", "PAID", 1, 1500),
        ("2026-12-01", "PAID", 1, 2500),
        ("2026-12-01", "PENDING", 1, 700),
        ("2026-12-02", "CANCELLED", 1, 900),
    ]
    assert [tuple(_plain(v) for v in r) for r in await _rows(url, FIGURES)] == expected
    assert await _rows(url, FIGURES) == await _rows(url, _by_hand(USE_PG))

    # From now on the triggers keep them: a move, a new order, a backdating, a delete.
    await _run(
        url,
        "UPDATE orders SET status = 'CANCELLED' WHERE id = 3",
        "UPDATE orders SET amount_cents = amount_cents WHERE id = 1",  # no change at all
        (
            INSERT_ORDER,
            {
                "id": 21,
                "status": "PENDING",
                "token": "t21",
                "amount": 300,
                "created": _stamp("2026-11-30 12:00:00+00:00"),
            },
        ),
        (
            "UPDATE orders SET created_at = :created WHERE id = 1",
            {"created": _stamp("2026-11-29 08:00:00+00:00")},
        ),
        "DELETE FROM orders WHERE id = 2",
    )
    assert await _rows(url, FIGURES) == await _rows(url, _by_hand(USE_PG))
    assert len(await _rows(url, FIGURES)) == 4

    await _migrate(url, "0002", down=True)
    tables = (
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        if USE_PG
        else "SELECT name FROM sqlite_master WHERE type = 'table'"
    )
    assert ("order_day_stats",) not in await _rows(url, tables)
    await _run(url, "UPDATE orders SET status = 'PAID' WHERE id = 3")  # no trigger left
    await _migrate(url, "head")  # and up again
    assert await _rows(url, FIGURES) == await _rows(url, _by_hand(USE_PG))


def _sqlite_utc(value: str) -> str:
    """As SQLAlchemy stores a timestamp in SQLite: the UTC wall clock as text."""
    return datetime.fromisoformat(value).astimezone(UTC).replace(tzinfo=None).isoformat(" ")


def _stamp(value: str) -> object:
    return datetime.fromisoformat(value) if USE_PG else _sqlite_utc(value)


def _plain(value: object) -> object:
    return int(value) if isinstance(value, Decimal) else value
