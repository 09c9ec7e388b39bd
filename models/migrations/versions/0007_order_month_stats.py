"""Orders per UTC month of creation, status and shard, kept by triggers: a deep page of the
date sorts finds the month its offset falls in from a few dozen rows a year, then the
day in `order_day_stats` (0003), then skips only that day's orders before the page
(models/queries.py `_day_jump`). Summing `order_day_stats` alone reads 80 rows a day,
58,000 for two years: 7-20 ms at any number of orders.

`order_month_stats` is kept like `order_day_stats`: triggers on `orders` in the writing
transaction, for every insert, status or creation-time change and delete, whoever writes;
on PostgreSQL, like the other counts since 0006_counts_at_commit, as `CONSTRAINT TRIGGER
... DEFERRABLE INITIALLY DEFERRED`: they count at the commit and hold their rows no longer.
A change's rows are locked in key order (the triggers on `orders` fire in name order, so
every writer takes the day rows before the month rows), and the shard (order id mod 16)
spreads the writers of one month.

It is filled in from `order_day_stats`, not from the orders: 80 rows a day whatever the
number of orders. The triggers are created first, in the same transaction: creating them
waits for the writers in flight (whose deferred day counts are written by their commit)
and holds back new ones until the commit (SHARE ROW EXCLUSIVE on `orders`; reads go on),
so the fill sees every committed order and no change is counted twice. Writers wait for
one aggregate of `order_day_stats` (tens of milliseconds at two years of days).

Revision ID: 0007_order_month_stats
Revises: 0006_counts_at_commit
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_order_month_stats"
down_revision = "0006_counts_at_commit"
branch_labels = None
depends_on = None

SHARDS = 16

# An insert (createOrder) or a delete changes one row: a plain upsert. An update of the
# status or creation time changes two, taken in key order in one statement.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION order_month_stats_apply() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO order_month_stats AS s (month, status, shard, orders)
    VALUES (date_trunc('month', NEW.created_at AT TIME ZONE 'UTC')::date, NEW.status,
            NEW.id % 16, 1)
    ON CONFLICT (month, status, shard) DO UPDATE SET orders = s.orders + 1;
    RETURN NULL;
  END IF;
  IF TG_OP = 'DELETE' THEN
    INSERT INTO order_month_stats AS s (month, status, shard, orders)
    VALUES (date_trunc('month', OLD.created_at AT TIME ZONE 'UTC')::date, OLD.status,
            OLD.id % 16, -1)
    ON CONFLICT (month, status, shard) DO UPDATE SET orders = s.orders - 1;
    RETURN NULL;
  END IF;
  IF OLD.status = NEW.status AND OLD.created_at = NEW.created_at THEN
    RETURN NULL;
  END IF;
  INSERT INTO order_month_stats AS s (month, status, shard, orders)
  SELECT d.month, d.status, d.shard, sum(d.orders)
  FROM (
    SELECT date_trunc('month', OLD.created_at AT TIME ZONE 'UTC')::date AS month,
           OLD.status AS status, OLD.id % 16 AS shard, -1 AS orders
    UNION ALL
    SELECT date_trunc('month', NEW.created_at AT TIME ZONE 'UTC')::date, NEW.status,
           NEW.id % 16, 1
  ) AS d
  GROUP BY d.month, d.status, d.shard
  ORDER BY d.month, d.status, d.shard
  ON CONFLICT (month, status, shard) DO UPDATE SET orders = s.orders + EXCLUDED.orders;
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

_DEFERRED = "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION order_month_stats_apply()"
_PG_TRIGGERS = (
    f"CREATE CONSTRAINT TRIGGER orders_month_stats_insert AFTER INSERT ON orders {_DEFERRED}",
    "CREATE CONSTRAINT TRIGGER orders_month_stats_update AFTER UPDATE OF status, created_at "
    f"ON orders {_DEFERRED}",
    f"CREATE CONSTRAINT TRIGGER orders_month_stats_delete AFTER DELETE ON orders {_DEFERRED}",
)

# SQLite stores timestamps as the UTC wall clock in text: the month's first day is
# strftime('%Y-%m-01', ...) of it.
_SQLITE_UPSERT = "ON CONFLICT (month, status, shard) DO UPDATE SET orders = orders + excluded.orders"
_SQLITE_OLD = f"(strftime('%Y-%m-01', OLD.created_at), OLD.status, OLD.id % {SHARDS}, -1)"
_SQLITE_NEW = f"(strftime('%Y-%m-01', NEW.created_at), NEW.status, NEW.id % {SHARDS}, 1)"
_SQLITE_INTO = "INSERT INTO order_month_stats (month, status, shard, orders) VALUES"
_SQLITE_TRIGGERS = (
    f"CREATE TRIGGER orders_month_stats_insert AFTER INSERT ON orders BEGIN "
    f"{_SQLITE_INTO} {_SQLITE_NEW} {_SQLITE_UPSERT}; END",
    f"CREATE TRIGGER orders_month_stats_update AFTER UPDATE OF status, created_at ON orders "
    f"WHEN OLD.status IS NOT NEW.status OR OLD.created_at IS NOT NEW.created_at BEGIN "
    f"{_SQLITE_INTO} {_SQLITE_OLD}, {_SQLITE_NEW} {_SQLITE_UPSERT}; END",
    f"CREATE TRIGGER orders_month_stats_delete AFTER DELETE ON orders BEGIN "
    f"{_SQLITE_INTO} {_SQLITE_OLD} {_SQLITE_UPSERT}; END",
)
_TRIGGER_NAMES = (
    "orders_month_stats_insert",
    "orders_month_stats_update",
    "orders_month_stats_delete",
)

# From the day figures (exact since 0003): the month of a day, its orders.
_PG_FILL = (
    "INSERT INTO order_month_stats (month, status, shard, orders) "
    "SELECT date_trunc('month', day)::date, status, shard, sum(orders) FROM order_day_stats "
    "GROUP BY 1, 2, 3 HAVING sum(orders) <> 0"
)
_SQLITE_FILL = (
    "INSERT INTO order_month_stats (month, status, shard, orders) "
    "SELECT strftime('%Y-%m-01', day), status, shard, sum(orders) FROM order_day_stats "
    "GROUP BY 1, 2, 3 HAVING sum(orders) <> 0"
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "order_month_stats",
        sa.Column("month", sa.Date, primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("orders", sa.BigInteger, nullable=False),
    )
    if postgres:
        op.execute(_PG_FUNCTION)
        for statement in _PG_TRIGGERS:
            op.execute(statement)
        op.execute(_PG_FILL)
    else:
        # SQLite: one writer at a time; the migration holds it.
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
        op.execute(_SQLITE_FILL)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in _TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON orders" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS order_month_stats_apply()")
    op.drop_table("order_month_stats")
