"""Orders at scale: N orders generated in SQL, for `bench/run --scale N` (issue 20).

The data, on a freshly migrated database (no users, no orders yet):

- the demo catalog (`server.demo.DEMO_PRODUCTS`, five SKUs) in `products`;
- `max(1, N // 100)` customers `user<i>@example.com` (ids 1..C, role USER);
- N orders, ids 1..N, created over the two years before `now` in id order (ids are
  handed out at creation), each of a customer picked by a hash of its id, with 1, 2 or
  3 lines (1.67 on average) of distinct catalog SKUs, 1-3 of each at the catalog price,
  and `amount_cents` the sum of its lines; statuses DELIVERED 55 %, PENDING 15 %,
  CANCELLED 12 %, PAID 10 %, SHIPPED 8 %, with the version that path gives;
- the derived tables the writing transaction keeps (`order_day_stats`; the order counts
  of 0005_orders_at_scale when the schema has them) recomputed
  from the orders with one `INSERT ... SELECT ... GROUP BY` after the load.

Every value is a function of the order's number, written once as SQL that both
PostgreSQL (`generate_series`) and SQLite (a recursive CTE) run, so the two backends get
the same orders. On PostgreSQL the load runs with triggers and foreign-key checks off
(`session_replication_role = replica`) and the secondary indexes of `orders` and
`order_lines` dropped, then rebuilt from their own definitions (`pg_indexes`): building
an index once is cheaper than keeping it up to date for every row. No events, payments
or webhook rows are generated: the orders list reads none of them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.demo import DEMO_PRODUCTS

SKUS = tuple(sku for sku, _, _ in DEMO_PRODUCTS)
PRICES = tuple(price for _, _, price in DEMO_PRODUCTS)
DAYS = 730
# Cumulative shares (percent) of the statuses, and the version each status's path gives
# (PENDING 1; PAID after the payment 2; SHIPPED 3; DELIVERED 4; CANCELLED from PENDING 2).
STATUSES = (
    ("DELIVERED", 55, 4),
    ("PENDING", 70, 1),
    ("CANCELLED", 82, 2),
    ("PAID", 92, 2),
    ("SHIPPED", 100, 3),
)
MAX_LINES = 3
# Orders per statement on PostgreSQL (progress is reported between them).
BATCH = 250_000
SQLITE_BATCH = 50_000
# The prime the hashes are taken modulo, and one multiplier per property.
_P = 1_000_003


def customers_for(n: int) -> int:
    return max(1, n // 100)


def _h(g: str, multiplier: int) -> str:
    return f"(({g} * {multiplier}) % {_P})"


def _case(value: str, options: list[tuple[str, str]], default: str) -> str:
    whens = " ".join(f"WHEN {when} THEN {then}" for when, then in options)
    return f"(CASE {whens} ELSE {default} END)"


def status_expr(g: str) -> str:
    r = f"({_h(g, 2654435761)} % 100)"
    return _case(r, [(f"{r} < {cut}", f"'{name}'") for name, cut, _ in STATUSES[:-1]], "'SHIPPED'")


def version_expr(g: str) -> str:
    r = f"({_h(g, 2654435761)} % 100)"
    return _case(r, [(f"{r} < {cut}", str(v)) for _, cut, v in STATUSES[:-1]], "3")


def lines_expr(g: str) -> str:
    """1 line for half the orders, 2 for a third, 3 for a sixth."""
    r = f"({_h(g, 3266489917)} % 6)"
    return f"(CASE WHEN {r} < 3 THEN 1 WHEN {r} < 5 THEN 2 ELSE 3 END)"


def _slot(g: str, j: int | str) -> str:
    return f"(({_h(g, 668265263)} % {len(SKUS)} + {j}) % {len(SKUS)})"


def sku_expr(g: str, j: int | str) -> str:
    slot = _slot(g, j)
    return _case(slot, [(f"{slot} = {i}", f"'{s}'") for i, s in enumerate(SKUS)], "NULL")


def price_expr(g: str, j: int | str) -> str:
    slot = _slot(g, j)
    return _case(slot, [(f"{slot} = {i}", str(p)) for i, p in enumerate(PRICES)], "NULL")


def qty_expr(g: str, j: int | str) -> str:
    return f"(1 + (({g} * 374761393 + ({j}) * 97) % {_P}) % 3)"


def amount_expr(g: str) -> str:
    n = lines_expr(g)
    parts = [
        f"(CASE WHEN {j} < {n} THEN {qty_expr(g, j)} * {price_expr(g, j)} ELSE 0 END)"
        for j in range(MAX_LINES)
    ]
    return "(" + " + ".join(parts) + ")"


def customer_expr(g: str, customers: int) -> str:
    return f"(1 + {_h(g, 2246822519)} % {customers})"


def _order_columns(g: str, customers: int, created: str, updated: str) -> str:
    return (
        f"{g}, {customer_expr(g, customers)}, {status_expr(g)}, {version_expr(g)}, "
        f"'scale-' || {g}, 'scale', {amount_expr(g)}, {created}, {updated}"
    )


ORDER_COLUMNS = (
    "id, user_id, status, version, client_token, items_fingerprint, amount_cents, "
    "created_at, updated_at"
)
LINE_COLUMNS = "order_id, sku, qty, unit_price_cents"


@dataclass
class Generated:
    orders: int
    customers: int
    lines: int
    seconds: dict[str, float]


Progress = Callable[[str], None]


class _Meter:
    """Rows per second and the time left, on one line per batch."""

    def __init__(self, what: str, total: int, progress: Progress) -> None:
        self.what, self.total, self.progress = what, total, progress
        self.started = time.monotonic()

    def done(self, rows: int) -> None:
        elapsed = time.monotonic() - self.started
        rate = rows / elapsed if elapsed else 0.0
        eta = (self.total - rows) / rate if rate else 0.0
        self.progress(
            f"{self.what}: {rows:,}/{self.total:,} ({rate:,.0f} rows/s, {eta:,.0f} s to go)"
        )


# -- PostgreSQL ---------------------------------------------------------------------------

_PG_CREATED = f"(now() - interval '{DAYS} days' + make_interval(secs => (g - 1) * $3::float8))"
_PG_UPDATED = (
    f"({_PG_CREATED} + CASE WHEN {status_expr('g')} = 'PENDING' THEN interval '0' "
    "ELSE make_interval(secs => 3600 + g % 86400) END)"
)

DAY_STATS_PG = (
    "INSERT INTO order_day_stats (day, status, shard, orders, amount_cents) "
    "SELECT (created_at AT TIME ZONE 'UTC')::date, status, id % 16, count(*), "
    "sum(amount_cents) FROM orders GROUP BY 1, 2, 3"
)
DAY_STATS_SQLITE = (
    "INSERT INTO order_day_stats (day, status, shard, orders, amount_cents) "
    "SELECT date(created_at), status, id % 16, count(*), sum(amount_cents) FROM orders "
    "GROUP BY 1, 2, 3"
)
COUNTS_PG_SQLITE = (
    "INSERT INTO order_status_counts (status, shard, orders) "
    "SELECT status, id % 16, count(*) FROM orders GROUP BY 1, 2"
)
USER_COUNTS = (
    "INSERT INTO user_order_counts (user_id, status, orders) "
    "SELECT user_id, status, count(*) FROM orders GROUP BY 1, 2"
)
MONTH_STATS_PG = (
    "INSERT INTO order_month_stats (month, status, shard, orders) "
    "SELECT date_trunc('month', created_at AT TIME ZONE 'UTC')::date, status, id % 16, "
    "count(*) FROM orders GROUP BY 1, 2, 3"
)
MONTH_STATS_SQLITE = (
    "INSERT INTO order_month_stats (month, status, shard, orders) "
    "SELECT strftime('%Y-%m-01', created_at), status, id % 16, count(*) FROM orders "
    "GROUP BY 1, 2, 3"
)
# Derived tables kept in the writing transaction, each recounted after the load when the
# schema has it: (table, recount on PostgreSQL, on SQLite). order_day_stats: migration
# 0003; the counts: 0005_orders_at_scale; order_month_stats: 0007_order_month_stats.
DERIVED = (
    ("order_day_stats", DAY_STATS_PG, DAY_STATS_SQLITE),
    ("order_month_stats", MONTH_STATS_PG, MONTH_STATS_SQLITE),
    ("order_status_counts", COUNTS_PG_SQLITE, COUNTS_PG_SQLITE),
    ("user_order_counts", USER_COUNTS, USER_COUNTS),
)


async def recount_pg(conn: Any) -> list[str]:
    """Recount every derived table the schema has, on `conn` (asyncpg); their names.

    The count triggers are deferred to the commit (migration 0006): changes this
    transaction made to the orders before the recount would otherwise be counted again
    at its commit, on top of a recount that already holds them. So they are counted now,
    before the tables are rebuilt."""
    if conn.is_in_transaction():
        await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
    done = []
    for table, sql, _ in DERIVED:
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            await conn.execute(f"DELETE FROM {table}")
            await conn.execute(sql)
            done.append(table)
    return done


def recount_sqlite(db: sqlite3.Connection) -> list[str]:
    done = []
    for table, _, sql in DERIVED:
        found = db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()[0]
        if found:
            db.execute(f"DELETE FROM {table}")
            db.execute(sql)
            done.append(table)
    return done


def _catalog_rows() -> list[tuple[str, str, int]]:
    return [(sku, name, price) for sku, name, price in DEMO_PRODUCTS]


async def generate_pg(dsn: str, n: int, progress: Progress = print) -> Generated:
    """Fill the migrated, empty PostgreSQL database at `dsn` (an asyncpg DSN)."""
    import asyncpg

    customers = customers_for(n)
    seconds: dict[str, float] = {}
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT count(*) FROM orders") or await conn.fetchval(
            "SELECT count(*) FROM users"
        ):
            raise RuntimeError("generate_pg needs a database without users or orders")
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("SET maintenance_work_mem = '256MB'")
        started = time.monotonic()
        indexes = await conn.fetch(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i "
            "WHERE i.schemaname = current_schema() "
            "AND i.tablename IN ('orders', 'order_lines') AND NOT EXISTS ("
            "  SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
        )
        for row in indexes:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        try:
            await _load_pg(conn, n, customers, progress)
            seconds["load"] = time.monotonic() - started
        finally:
            # Rebuilt whatever happened: a failed load must not leave a table unindexed.
            started = time.monotonic()
            for row in indexes:
                t = time.monotonic()
                await conn.execute(row["indexdef"])
                progress(f"index {row['indexname']}: {time.monotonic() - t:.1f} s")
            seconds["indexes"] = time.monotonic() - started
        started = time.monotonic()
        recounted = await recount_pg(conn)
        progress(f"recounted {', '.join(recounted)}")
        for table in ("users", "orders", "order_lines"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        seconds["derived"] = time.monotonic() - started
        started = time.monotonic()
        await conn.execute("RESET session_replication_role")
        await conn.execute("VACUUM (ANALYZE)")
        seconds["vacuum"] = time.monotonic() - started
        lines = int(await conn.fetchval("SELECT count(*) FROM order_lines"))
    finally:
        await conn.close()
    return Generated(n, customers, lines, seconds)


async def _load_pg(conn: Any, n: int, customers: int, progress: Progress) -> None:
    await conn.executemany(
        "INSERT INTO products (sku, name, price_cents, updated_at) VALUES ($1, $2, $3, now()) "
        "ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, "
        "price_cents = EXCLUDED.price_cents",
        _catalog_rows(),
    )
    await conn.execute(
        "INSERT INTO users (id, email, password_hash, role, created_at) "
        "SELECT i, 'user' || i || '@example.com', '!unusable', 'USER', "
        f"now() - interval '{DAYS + 1} days' FROM generate_series(1, $1) i",
        customers,
    )
    step = DAYS * 86400 / n
    order_sql = (
        f"INSERT INTO orders ({ORDER_COLUMNS}) SELECT "
        f"{_order_columns('g', customers, _PG_CREATED, _PG_UPDATED)} "
        "FROM generate_series($1::bigint, $2::bigint) g"
    )
    line_sql = (
        f"INSERT INTO order_lines ({LINE_COLUMNS}) SELECT g, {sku_expr('g', 'j')}, "
        f"{qty_expr('g', 'j')}, {price_expr('g', 'j')} "
        "FROM generate_series($1::bigint, $2::bigint) g "
        f"CROSS JOIN generate_series(0, {MAX_LINES - 1}) j "
        f"WHERE j < {lines_expr('g')} ORDER BY g, j"
    )
    meter = _Meter("orders and lines", n, progress)
    for lo in range(1, n + 1, BATCH):
        hi = min(n, lo + BATCH - 1)
        async with conn.transaction():
            await conn.execute(order_sql, lo, hi, step)
            await conn.execute(line_sql, lo, hi)
        meter.done(hi)


# -- SQLite -------------------------------------------------------------------------------


def _sqlite_ts(offset: str) -> str:
    return f"(strftime('%Y-%m-%d %H:%M:%S', {offset}, 'unixepoch') || '.000000')"


def generate_sqlite(path: str, n: int, progress: Progress = print) -> Generated:
    """Fill the migrated, empty SQLite database file at `path`."""
    customers = customers_for(n)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    db = sqlite3.connect(path)
    try:
        if db.execute(
            "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM users)"
        ).fetchone()[0]:
            raise RuntimeError("generate_sqlite needs a database without users or orders")
        # Triggers stay on: SQLite fires them row by row in the same statement, and the
        # day figures are recounted anyway (a trigger dropped and recreated could drift
        # from its migration's text).
        db.execute("PRAGMA foreign_keys = OFF")
        db.execute("PRAGMA synchronous = OFF")
        now = int(time.time())
        begin = now - DAYS * 86400
        step = DAYS * 86400 / n
        with db:
            db.executemany(
                "INSERT INTO products (sku, name, price_cents, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (sku) DO UPDATE SET name = excluded.name, "
                "price_cents = excluded.price_cents",
                [
                    (*row, time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime(now)))
                    for row in _catalog_rows()
                ],
            )
            db.execute(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
                "INSERT INTO users (id, email, password_hash, role, created_at) "
                "SELECT i, 'user' || i || '@example.com', '!unusable', 'USER', "
                f"{_sqlite_ts(str(begin - 86400))} FROM s",
                (customers,),
            )
        series = "WITH RECURSIVE s(g) AS (SELECT ? UNION ALL SELECT g + 1 FROM s WHERE g < ?) "
        created_at = f"({begin} + CAST((g - 1) * {step!r} AS INTEGER))"
        updated_at = (
            f"({created_at} + CASE WHEN {status_expr('g')} = 'PENDING' THEN 0 "
            "ELSE 3600 + g % 86400 END)"
        )
        order_sql = (
            f"{series} INSERT INTO orders ({ORDER_COLUMNS}) SELECT "
            f"{_order_columns('g', customers, _sqlite_ts(created_at), _sqlite_ts(updated_at))} "
            "FROM s"
        )
        line_sql = (
            f"{series}, js(j) AS (VALUES (0), (1), (2)) "
            f"INSERT INTO order_lines ({LINE_COLUMNS}) SELECT g, {sku_expr('g', 'j')}, "
            f"{qty_expr('g', 'j')}, {price_expr('g', 'j')} FROM s CROSS JOIN js "
            f"WHERE j < {lines_expr('g')} ORDER BY g, j"
        )
        meter = _Meter("orders and lines", n, progress)
        for lo in range(1, n + 1, SQLITE_BATCH):
            hi = min(n, lo + SQLITE_BATCH - 1)
            with db:
                db.execute(order_sql, (lo, hi))
                db.execute(line_sql, (lo, hi))
            meter.done(hi)
        seconds["load"] = time.monotonic() - started
        started = time.monotonic()
        with db:
            progress(f"recounted {', '.join(recount_sqlite(db))}")
        db.execute("ANALYZE")
        seconds["derived"] = time.monotonic() - started
        lines = int(db.execute("SELECT count(*) FROM order_lines").fetchone()[0])
    finally:
        db.close()
    return Generated(n, customers, lines, seconds)


async def generate(url: str, n: int, progress: Progress = print) -> Generated:
    """`n` orders into the migrated, empty database at the SQLAlchemy `url`."""
    if url.startswith("sqlite"):
        return await asyncio.to_thread(generate_sqlite, url.split("///", 1)[1], n, progress)
    return await generate_pg(url.replace("postgresql+asyncpg://", "postgresql://", 1), n, progress)


def expected_statuses(n: int) -> dict[str, int]:
    """How many orders of each status `generate` writes for `n` (computed in Python from
    the same hash, to check the SQL)."""
    counts: dict[str, int] = {}
    for g in range(1, n + 1):
        r = (g * 2654435761) % _P % 100
        name = next(s for s, cut, _ in STATUSES if r < cut)
        counts[name] = counts.get(name, 0) + 1
    return counts


def expected_amount(g: int) -> tuple[int, list[tuple[str, int, int]]]:
    """The order `g`'s amount and lines, (sku, qty, unit price) each, computed in Python."""
    r = (g * 3266489917) % _P % 6
    count = 1 if r < 3 else 2 if r < 5 else 3
    first = (g * 668265263) % _P % len(SKUS)
    lines = []
    for j in range(count):
        slot = (first + j) % len(SKUS)
        qty = 1 + (g * 374761393 + j * 97) % _P % 3
        lines.append((SKUS[slot], qty, PRICES[slot]))
    return sum(q * p for _, q, p in lines), lines
