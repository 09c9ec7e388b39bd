"""Migration 0006: on PostgreSQL the order counts (day figures, status and per-customer
counts) are written when the changing transaction commits, so a transaction holds no
counter row while it goes on with its other statements (its event, its round trips), and
writers of the same customer or status do not queue behind it. The counts stay exact."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.client import GraphQLClient
from tests.conftest import USE_PG

pytestmark = pytest.mark.skipif(not USE_PG, reason="SQLite has one writer at a time")

COUNTERS = (
    "order_day_stats",
    "order_month_stats",
    "order_status_counts",
    "user_order_counts",
)
MY_PAID = "query { orders(status: PAID) { total totalIsExact } }"


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def test_a_status_change_holds_no_counter_row_before_its_commit(
    client: GraphQLClient, user_token: str, database_url: str
) -> None:
    order = (await client.create_order(user_token, "c1")).ok()["createOrder"]
    before = (await client.execute(MY_PAID, None, user_token)).ok()["orders"]
    assert before == {"total": 0, "totalIsExact": True}
    writer = await asyncpg.connect(_dsn(database_url))
    other = await asyncpg.connect(_dsn(database_url))
    try:
        changing = writer.transaction()
        await changing.start()
        await writer.execute(
            "UPDATE orders SET status = 'PAID', version = version + 1 WHERE id = $1",
            int(order["id"]),
        )
        # Every counter row, this customer's included, can be locked by another writer
        # while the change is still open (before 0006 its trigger held them: NOWAIT failed).
        for table in COUNTERS:
            async with other.transaction():
                rows = await other.fetch(f"SELECT 1 FROM {table} FOR UPDATE NOWAIT")  # noqa: S608
                assert rows, table
        await changing.commit()
        # Counted at the commit: the customer's counts and the status counts agree with
        # their orders.
        mine = await other.fetch(
            "SELECT status, orders FROM user_order_counts WHERE orders <> 0 ORDER BY status"
        )
        assert [tuple(r) for r in mine] == [("PAID", 1)]
        by_status = await other.fetch(
            "SELECT status, sum(orders) FROM order_status_counts GROUP BY status "
            "HAVING sum(orders) <> 0"
        )
        assert [tuple(r) for r in by_status] == [("PAID", 1)]
    finally:
        await writer.close()
        await other.close()
