"""The scale benchmark's generated orders (bench/scaledata.py) are consistent, on the
backend under test: what the SQL wrote is what the same hashes give in Python, the
derived day figures equal a recount, and the service reads the data back."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import inspect, text

from bench import scaledata
from models.db import null_pool_engine
from models.tables import as_utc
from tests.client import GraphQLClient

N = 2_000
RECOUNT_PG = (
    "SELECT (created_at AT TIME ZONE 'UTC')::date, status, count(*), sum(amount_cents) "
    "FROM orders GROUP BY 1, 2"
)
RECOUNT_SQLITE = (
    "SELECT date(created_at), status, count(*), sum(amount_cents) FROM orders GROUP BY 1, 2"
)


async def _rows(url: str, sql: str) -> list[Any]:
    engine = null_pool_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql))).all())
    finally:
        await engine.dispose()


async def _present(url: str, tables: set[str]) -> set[str]:
    engine = null_pool_engine(url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    return names & tables


async def test_generated_orders_are_consistent(database_url: str, client: GraphQLClient) -> None:
    generated = await scaledata.generate(database_url, N, progress=lambda _: None)
    customers = scaledata.customers_for(N)
    assert (generated.orders, generated.customers) == (N, customers)

    statuses = dict(await _rows(database_url, "SELECT status, count(*) FROM orders GROUP BY 1"))
    assert statuses == scaledata.expected_statuses(N)
    # A realistic spread: every status present, DELIVERED the most.
    assert set(statuses) == {"PENDING", "PAID", "SHIPPED", "DELIVERED", "CANCELLED"}
    assert max(statuses, key=lambda s: statuses[s]) == "DELIVERED"

    orders = await _rows(
        database_url,
        "SELECT id, user_id, status, version, amount_cents, created_at, updated_at "
        "FROM orders ORDER BY id",
    )
    lines = await _rows(
        database_url, "SELECT order_id, sku, qty, unit_price_cents FROM order_lines ORDER BY id"
    )
    assert generated.lines == len(lines)
    by_order: dict[int, list[tuple[str, int, int]]] = {}
    for order_id, sku, qty, price in lines:
        by_order.setdefault(order_id, []).append((sku, qty, price))
    versions = {name: v for name, _, v in scaledata.STATUSES}
    now = datetime.now(UTC)
    previous = None
    for order_id, user_id, status, version, amount, created, updated in orders:
        amount_expected, lines_expected = scaledata.expected_amount(order_id)
        assert by_order[order_id] == lines_expected
        assert amount == amount_expected == sum(q * p for _, q, p in by_order[order_id])
        assert 1 <= len(by_order[order_id]) <= 3
        assert len({sku for sku, _, _ in by_order[order_id]}) == len(by_order[order_id])
        assert 1 <= user_id <= customers
        assert version == versions[status]
        created, updated = as_utc(created), as_utc(updated)
        assert now - timedelta(days=scaledata.DAYS + 1) < created <= now
        assert updated >= created
        assert previous is None or created >= previous  # ids follow creation
        previous = created
    # About two years, and 1.67 lines an order on average.
    span = as_utc(orders[-1][5]) - as_utc(orders[0][5])
    assert timedelta(days=scaledata.DAYS - 2) < span <= timedelta(days=scaledata.DAYS)
    assert 1.6 < len(lines) / N < 1.75
    owners = Counter(o[1] for o in orders)
    assert len(owners) == customers

    # The day figures equal a recount of the orders (by UTC day and status).
    recount = await _rows(
        database_url,
        RECOUNT_SQLITE if database_url.startswith("sqlite") else RECOUNT_PG,
    )
    stats = await _rows(
        database_url,
        "SELECT day, status, sum(orders), sum(amount_cents) FROM order_day_stats "
        "GROUP BY day, status",
    )

    def keyed(rows: list[Any]) -> dict[tuple[str, str], tuple[int, int]]:
        return {(str(d), s): (int(c), int(a)) for d, s, c, a in rows}

    assert keyed(stats) == keyed(recount)
    # So do the order counts, where the schema keeps them (0005_orders_at_scale).
    tables = {t for t, _, _ in scaledata.DERIVED} - {"order_day_stats"}
    present = await _present(database_url, tables)
    if "order_status_counts" in present:
        kept = await _rows(
            database_url, "SELECT status, sum(orders) FROM order_status_counts GROUP BY status"
        )
        assert {s: int(c) for s, c in kept} == statuses
    if "order_month_stats" in present:  # 0007_order_month_stats
        kept = await _rows(
            database_url,
            "SELECT month, sum(orders) FROM order_month_stats GROUP BY month HAVING sum(orders) <> 0",
        )
        months = Counter(as_utc(o[5]).strftime("%Y-%m-01") for o in orders)
        assert {str(m): int(c) for m, c in kept} == dict(months)
    if "user_order_counts" in present:
        kept = await _rows(database_url, "SELECT user_id, status, orders FROM user_order_counts")
        counted = Counter((o[1], o[2]) for o in orders)
        assert {(u, s): int(c) for u, s, c in kept if c} == dict(counted)

    # The service reads them: totals, a customer by email, a SKU search, the catalog.
    admin = await client.make_admin("admin@example.com")
    query = (
        "query($s: OrderStatus, $q: String) { orders(status: $s, q: $q, limit: 5) "
        "{ total items { id status amountCents user { email } items { sku } } } }"
    )
    page = (await client.execute(query, {}, admin)).ok()["orders"]
    assert page["total"] == N and page["items"][0]["id"] == str(N)
    paid = (await client.execute(query, {"s": "PAID"}, admin)).ok()["orders"]
    assert paid["total"] == statuses["PAID"]
    email = "user7@example.com"
    mine = (await client.execute(query, {"q": email}, admin)).ok()["orders"]
    assert mine["total"] == owners[7]
    assert all(o["user"]["email"] == email for o in mine["items"])
    widgets = (await client.execute(query, {"q": "widget"}, admin)).ok()["orders"]
    assert widgets["total"] == sum(
        1 for ls in by_order.values() if any(s == "WIDGET-001" for s, _, _ in ls)
    )
    skus = (await client.execute("{ products { sku priceCents } }")).ok()["products"]
    assert {p["sku"]: p["priceCents"] for p in skus} == dict(
        zip(scaledata.SKUS, scaledata.PRICES, strict=True)
    )


async def test_a_recount_after_changes_in_its_transaction_is_not_counted_twice(
    database_url: str,
) -> None:
    """What the bench does to a kept database after the migration under writes: delete
    the writer's orders and recount in one transaction. The count triggers run at the
    commit on PostgreSQL (0006), so the recount must count those deletions first, or the
    commit takes them off the recount again."""
    if not database_url.startswith("postgresql"):
        return  # SQLite's triggers run at the statement: nothing is deferred
    import asyncpg

    await scaledata.generate(database_url, 200, progress=lambda _: None)
    dsn = database_url.replace("+asyncpg", "")
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM orders WHERE id % 7 = 0")
            await conn.execute("UPDATE orders SET status = 'CANCELLED' WHERE id % 5 = 0")
            await scaledata.recount_pg(conn)
    finally:
        await conn.close()
    statuses = dict(await _rows(database_url, "SELECT status, count(*) FROM orders GROUP BY 1"))
    kept = await _rows(
        database_url,
        "SELECT status, sum(orders) FROM order_status_counts GROUP BY status "
        "HAVING sum(orders) <> 0",
    )
    assert {s: int(c) for s, c in kept} == statuses
    days = await _rows(database_url, "SELECT sum(orders) FROM order_day_stats")
    assert int(days[0][0]) == sum(statuses.values())
