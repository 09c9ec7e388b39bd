"""The statements of the request paths (models/sql.py, models/queries.py) on both
backends: built from the tables, what they write reads back the same through the ORM,
and every column of a table is in its row type."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    literal_column,
    select,
)

from models import queries, rows
from models.db import Database
from models.sql import POSTGRES, SQLITE, Statement
from models.state import OrderSort
from models.tables import Order, OrderLine, User


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=2)
    yield database
    await database.dispose()


def test_every_column_of_a_table_is_a_field_of_its_row_type() -> None:
    for model, row_type in rows.ROW_TYPES.items():
        table = model.__table__  # type: ignore[attr-defined]
        left_out = rows.LEFT_OUT.get(table.name, ())
        expected = [c.key for c in table.columns if c.key not in left_out]
        assert [f.name for f in dataclasses.fields(row_type)] == expected, table.name
    assert "password_hash" not in [f.name for f in dataclasses.fields(rows.UserRow)]


SCRATCH = Table(
    "scratch",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("note", String(20), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class Scratch:
    __table__ = SCRATCH


def test_a_column_added_to_a_table_is_in_its_row_type_and_its_reads() -> None:
    """What adding a stored field relies on: the row type and `SELECT`s of the whole
    table follow the table; no list of columns to keep in step."""
    row_type = rows.row_type(Scratch)  # type: ignore[arg-type]
    assert [f.name for f in dataclasses.fields(row_type)] == ["id", "note", "created_at"]
    read = Statement(lambda d: select(*SCRATCH.c)).compiled(SQLITE).reader(row_type)
    row = read((1, None, "2026-12-01 12:00:00.000000"))
    assert (row.id, row.note, row.created_at) == (1, None, datetime(2026, 12, 1, 12, tzinfo=UTC))


def test_a_row_is_read_by_column_name_wherever_the_column_is() -> None:
    row_type = rows.row_type(Scratch)  # type: ignore[arg-type]
    stmt = Statement(lambda d: select(literal_column("'x'").label("extra"), *reversed(SCRATCH.c)))
    for dialect, created in ((SQLITE, "2026-12-01 12:00:00.000000"), (POSTGRES, NOON)):
        compiled = stmt.compiled(dialect)
        assert compiled.columns == ("extra", "created_at", "note", "id")
        row = compiled.reader(row_type)(("x", created, "hello", 7))
        assert (row.id, row.note, row.created_at) == (7, "hello", NOON)


def test_an_insert_fills_in_what_the_caller_leaves_out_from_the_table() -> None:
    """Defaults of the table for columns that have one; NULL for nullable ones."""
    table = Table(
        "scratch_insert",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("status", String(16), nullable=False, default="NEW"),
        Column("note", String(20), nullable=True),
    )
    stmt = Statement(lambda d: queries._insert(d, table, ["status", "note"]))
    for dialect in (POSTGRES, SQLITE):
        compiled = stmt.compiled(dialect)
        assert compiled.args({}) == ["NEW", None]
        assert compiled.args({"note": "n", "status": "OLD"}) == ["OLD", "n"]


def test_every_statement_compiles_on_both_dialects_and_reads_by_name() -> None:
    statements = [v for v in vars(queries).values() if isinstance(v, Statement)]
    filters = itertools.product((False, True), repeat=8)
    shapes = [(*f, OrderSort.NEWEST, keyset) for f in filters for keyset in (False, True)]
    shapes += [(*(True,) * 8, sort, True) for sort in OrderSort]
    shapes += [(*(True,) * 7, 2, sort, keyset) for sort in OrderSort for keyset in (False, True)]
    for shape, lines, owners in itertools.product(shapes, (False, True), (False, True)):
        statements.append(queries._page_read_statement(shape, lines, owners))
    # A deep page of a date sort, over all orders or one status (`queries.jumps`).
    for status, sort in itertools.product((False, True), (OrderSort.NEWEST, OrderSort.OLDEST)):
        shape = (False, status, *(False,) * 5, 0, sort, False)
        statements.append(queries._page_read_statement(shape, True, True, True))
    for stmt in statements:
        for dialect in (POSTGRES, SQLITE):
            compiled = stmt.compiled(dialect)
            assert "$" not in compiled.text or dialect is POSTGRES
            assert "?" not in compiled.text or dialect is SQLITE
    page = queries.page_statement(
        queries.OrderFilter(user_id=1), with_lines=True, with_owners=True
    ).compiled(POSTGRES)
    for row_type, prefix in ((rows.OrderRow, "p_"), (rows.LineRow, "l_"), (rows.UserRow, "u_")):
        page.reader(row_type, prefix)  # raises if a field's column is not selected
    with pytest.raises(LookupError):
        page.reader(rows.PaymentRow, "p_")


NOON = datetime(2026, 12, 1, 12, tzinfo=UTC)


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
        written = await queries.insert_order(
            conn,
            user_id=user_id,
            status="PENDING",
            client_token="t-1",
            items_fingerprint="f" * 64,
            amount_cents=3000,
            now=now,
        )
        assert written is not None
        order_id = written.id
        # Columns the insert leaves out get the table's defaults; the row written is
        # what the insert answers.
        assert (written.version, written.created_at, written.updated_at) == (1, now, now)
        lines = [
            queries.NewLine("WIDGET-001", 2, 1000),
            queries.NewLine("GADGET-002", 1, 1000),
        ]
        written_lines = await queries.insert_lines(conn, order_id, lines)
        assert [(li.order_id, li.sku, li.qty) for li in written_lines] == [
            (order_id, "WIDGET-001", 2),
            (order_id, "GADGET-002", 1),
        ]
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
                order = await queries.insert_order(
                    conn,
                    user_id=owner,
                    status="PAID" if n % 2 else "PENDING",
                    client_token=f"t{n}",
                    items_fingerprint="f",
                    amount_cents=1000,
                    now=start + timedelta(minutes=n),
                )
                assert order is not None
                await queries.insert_lines(conn, order.id, [queries.NewLine(sku, 1, 1000)])
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
        # The last page a client may ask for: an offset past 32 bits is no error.
        far = await queries.read_page(
            conn, mine, limit=100, offset=(2**31 - 2) * 100, with_lines=True, with_owners=True
        )
        assert (far.total, far.orders) == (5, [])
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


async def test_a_longer_sku_never_matches_a_stored_one_it_starts_with(db: Database) -> None:
    """A list parameter is compared as text: cast to the column's VARCHAR(64) it would be
    cut down to the stored SKU and priced as it."""
    stored = "S" * 64
    async with db.begin() as conn:
        await queries.upsert_product(
            conn, sku=stored, name="Long", price_cents=5, now=datetime.now(UTC)
        )
    async with db.connect() as conn:
        assert await queries.prices(conn, [stored]) == {stored: 5}
        assert await queries.prices(conn, [stored + "X"]) == {}
