"""The direct statements (models/sql.py, models/queries.py) on both backends: what they
write reads back the same through the ORM, and the SQLite spelling rules hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from models import queries
from models.db import Database
from models.rows import LineRow
from models.sql import Statement, sqlite_spelling
from models.tables import Order, OrderLine, User


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=2)
    yield database
    await database.dispose()


def test_the_sqlite_spelling_of_placeholders_lists_and_locks() -> None:
    assert sqlite_spelling("SELECT a FROM t WHERE id = $1 AND b = $12") == (
        "SELECT a FROM t WHERE id = ?1 AND b = ?12"
    )
    assert sqlite_spelling("SELECT a FROM t WHERE id = ANY($2::int[])") == (
        "SELECT a FROM t WHERE id IN (SELECT value FROM json_each(?2))"
    )
    assert sqlite_spelling("SELECT a FROM t WHERE id = $1 FOR UPDATE") == (
        "SELECT a FROM t WHERE id = ?1"
    )
    given = Statement("SELECT 1 WHERE $1", sqlite="SELECT 2 WHERE ?1")
    assert (given.pg, given.sqlite) == ("SELECT 1 WHERE $1", "SELECT 2 WHERE ?1")


async def _user(db: Database, email: str) -> int:
    async with db.begin() as conn:
        user = await queries.insert_user(
            conn, email=email, password_hash="x", role="USER", now=datetime.now(UTC)
        )
    assert user is not None
    return user.id


async def test_what_is_written_directly_reads_back_the_same_through_the_orm(
    db: Database,
) -> None:
    user_id = await _user(db, "direct@example.com")
    now = datetime(2026, 12, 1, 12, 30, 45, 123456, tzinfo=UTC)
    async with db.begin() as conn:
        order_id = await queries.insert_order(
            conn,
            user_id=user_id,
            status="PENDING",
            client_token="t-1",
            items_fingerprint="f" * 64,
            amount_cents=3000,
            now=now,
        )
        assert order_id is not None
        lines = [
            LineRow(None, order_id, "WIDGET-001", 2, 1000),
            LineRow(None, order_id, "GADGET-002", 1, 1000),
        ]
        await queries.insert_lines(conn, order_id, lines)
    async with db.read() as session:
        order = await session.get(Order, order_id)
        assert order is not None
        assert order.created_at.replace(tzinfo=order.created_at.tzinfo or UTC) == now
        stored = (
            await session.execute(
                select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.id)
            )
        ).scalars()
        assert [(li.sku, li.qty, li.unit_price_cents) for li in stored] == [
            ("WIDGET-001", 2, 1000),
            ("GADGET-002", 1, 1000),
        ]
        owner = await session.get(User, user_id)
        assert owner is not None and owner.email == "direct@example.com"
    async with db.connect() as conn:
        again = await queries.order_by_id(conn, order_id)
        assert again is not None
        assert (again.created_at, again.updated_at) == (now, now)
        assert again.created_at.tzinfo is not None
        read_lines = await queries.lines_of(conn, [order_id, 999_999])
        assert [(li.sku, li.qty) for li in read_lines] == [("WIDGET-001", 2), ("GADGET-002", 1)]
        # A repeat of the token inserts nothing.
        repeat = await queries.insert_order(
            conn,
            user_id=user_id,
            status="PENDING",
            client_token="t-1",
            items_fingerprint="other",
            amount_cents=1,
            now=now,
        )
        assert repeat is None


async def test_filters_and_pages_of_orders(db: Database) -> None:
    alice = await _user(db, "alice@example.com")
    bob = await _user(db, "bob@example.com")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    async with db.begin() as conn:
        for n in range(5):
            for owner, sku in ((alice, "WIDGET-001"), (bob, "GADGET-002")):
                order_id = await queries.insert_order(
                    conn,
                    user_id=owner,
                    status="PAID" if n % 2 else "PENDING",
                    client_token=f"t{n}",
                    items_fingerprint="f",
                    amount_cents=1000,
                    now=start + timedelta(minutes=n),
                )
                assert order_id is not None
                await queries.insert_lines(conn, order_id, [LineRow(None, order_id, sku, 1, 1000)])
    async with db.connect() as conn:

        async def count(where: queries.OrderFilter) -> int:
            page = await queries.read_page(
                conn, where, limit=1, offset=0, with_lines=False, with_owners=False
            )
            return page.total

        mine = queries.OrderFilter(user_id=alice)
        page = await queries.read_page(
            conn, mine, limit=2, offset=0, with_lines=True, with_owners=True
        )
        assert page.total == 5
        assert [o.client_token for o in page.orders] == ["t4", "t3"]  # newest first
        assert [(li.order_id, li.sku) for li in page.lines] == [
            (page.orders[0].id, "WIDGET-001"),
            (page.orders[1].id, "WIDGET-001"),
        ]
        assert [u.email for u in page.owners] == ["alice@example.com"]
        beyond = await queries.read_page(
            conn, mine, limit=2, offset=10, with_lines=True, with_owners=True
        )
        assert (beyond.total, beyond.orders, beyond.lines, beyond.owners) == (5, [], [], [])
        assert await count(queries.OrderFilter(user_id=alice, status="PAID")) == 2
        assert await count(queries.OrderFilter(pattern="%gadget%")) == 5
        assert await count(queries.OrderFilter(pattern="%alice%", match_emails=True)) == 5
        first = page.orders[0].id
        by_id = await queries.read_page(
            conn,
            queries.OrderFilter(pattern=f"%{first}%", order_id=first),
            limit=100,
            offset=0,
            with_lines=False,
            with_owners=False,
        )
        assert first in [o.id for o in by_id.orders]
        # LIKE's wildcards in the text searched for are escaped by the caller; here a
        # literal underscore pattern matches nothing.
        assert await count(queries.OrderFilter(pattern="%\\_%")) == 0
        nobody = queries.OrderFilter(user_id=999_999)
        empty = await queries.read_page(
            conn, nobody, limit=10, offset=0, with_lines=True, with_owners=True
        )
        assert (empty.total, empty.orders) == (0, [])


async def test_a_failed_write_transaction_leaves_nothing(db: Database) -> None:
    user_id = await _user(db, "rollback@example.com")
    with pytest.raises(RuntimeError):
        async with db.begin() as conn:
            await queries.insert_order(
                conn,
                user_id=user_id,
                status="PENDING",
                client_token="gone",
                items_fingerprint="f",
                amount_cents=1,
                now=datetime.now(UTC),
            )
            raise RuntimeError("boom")
    async with db.connect() as conn:
        assert await queries.order_by_token(conn, user_id, "gone") is None
