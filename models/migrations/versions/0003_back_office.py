"""Back office: indexes for the order sorts, refund claims, dead letters of refunds and
their retries, and per-day order figures kept by triggers.

`order_day_stats` holds, per UTC day of creation, status and shard, how many orders there
are and their total amount. Triggers on `orders` keep it in the writing transaction, for
every insert, status (or amount, or creation time) change and delete, whoever writes: the
figures can never disagree with the orders. A status change subtracts from one row and
adds to another in one statement whose rows are locked in key order, so that racing
writers never deadlock; the shard (order id mod 16) spreads the writers of one day.

Revision ID: 0003_back_office
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_back_office"
down_revision = "0002"
branch_labels = None
depends_on = None

SHARDS = 16

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION order_day_stats_apply() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.status = NEW.status AND OLD.created_at = NEW.created_at
     AND OLD.amount_cents = NEW.amount_cents THEN
    RETURN NULL;
  END IF;
  INSERT INTO order_day_stats AS s (day, status, shard, orders, amount_cents)
  SELECT d.day, d.status, d.shard, sum(d.orders), sum(d.amount_cents)
  FROM (
    SELECT (OLD.created_at AT TIME ZONE 'UTC')::date AS day, OLD.status AS status,
           OLD.id % {SHARDS} AS shard, -1 AS orders, -OLD.amount_cents::bigint AS amount_cents
    WHERE TG_OP IN ('UPDATE', 'DELETE')
    UNION ALL
    SELECT (NEW.created_at AT TIME ZONE 'UTC')::date, NEW.status, NEW.id % {SHARDS}, 1,
           NEW.amount_cents::bigint
    WHERE TG_OP IN ('INSERT', 'UPDATE')
  ) AS d
  GROUP BY d.day, d.status, d.shard
  ORDER BY d.day, d.status, d.shard
  ON CONFLICT (day, status, shard) DO UPDATE
    SET orders = s.orders + EXCLUDED.orders,
        amount_cents = s.amount_cents + EXCLUDED.amount_cents;
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""

_PG_TRIGGERS = (
    "CREATE TRIGGER orders_day_stats_insert AFTER INSERT ON orders "
    "FOR EACH ROW EXECUTE FUNCTION order_day_stats_apply()",
    "CREATE TRIGGER orders_day_stats_update AFTER UPDATE OF status, created_at, amount_cents "
    "ON orders FOR EACH ROW EXECUTE FUNCTION order_day_stats_apply()",
    "CREATE TRIGGER orders_day_stats_delete AFTER DELETE ON orders "
    "FOR EACH ROW EXECUTE FUNCTION order_day_stats_apply()",
)

# SQLite stores timestamps as the UTC wall clock in text: date() is the UTC day.
_SQLITE_UPSERT = (
    "ON CONFLICT (day, status, shard) DO UPDATE SET orders = orders + excluded.orders, "
    "amount_cents = amount_cents + excluded.amount_cents"
)
_SQLITE_OLD = f"(date(OLD.created_at), OLD.status, OLD.id % {SHARDS}, -1, -OLD.amount_cents)"
_SQLITE_NEW = f"(date(NEW.created_at), NEW.status, NEW.id % {SHARDS}, 1, NEW.amount_cents)"
_SQLITE_INTO = "INSERT INTO order_day_stats (day, status, shard, orders, amount_cents) VALUES"
_SQLITE_TRIGGERS = (
    f"CREATE TRIGGER orders_day_stats_insert AFTER INSERT ON orders BEGIN "
    f"{_SQLITE_INTO} {_SQLITE_NEW} {_SQLITE_UPSERT}; END",
    f"CREATE TRIGGER orders_day_stats_update AFTER UPDATE OF status, created_at, amount_cents "
    f"ON orders WHEN OLD.status IS NOT NEW.status OR OLD.created_at IS NOT NEW.created_at "
    f"OR OLD.amount_cents IS NOT NEW.amount_cents BEGIN "
    f"{_SQLITE_INTO} {_SQLITE_OLD}, {_SQLITE_NEW} {_SQLITE_UPSERT}; END",
    f"CREATE TRIGGER orders_day_stats_delete AFTER DELETE ON orders BEGIN "
    f"{_SQLITE_INTO} {_SQLITE_OLD} {_SQLITE_UPSERT}; END",
)
_TRIGGER_NAMES = ("orders_day_stats_insert", "orders_day_stats_update", "orders_day_stats_delete")


def _ts(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_index("ix_orders_updated", "orders", ["updated_at", "id"])
    op.create_index("ix_orders_amount", "orders", ["amount_cents", "id"])
    with op.batch_alter_table("payments") as batch:
        batch.add_column(_ts("refund_started_at"))
    with op.batch_alter_table("payment_dead_letters") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="payment")
        )
        batch.add_column(_ts("retried_at"))
    op.create_index(
        "ix_payment_dead_letters_created", "payment_dead_letters", ["created_at", "id"]
    )
    op.create_table(
        "order_day_stats",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
    )
    day = "(created_at AT TIME ZONE 'UTC')::date" if postgres else "date(created_at)"
    op.execute(
        "INSERT INTO order_day_stats (day, status, shard, orders, amount_cents) "
        f"SELECT {day}, status, id % {SHARDS}, count(*), sum(amount_cents) FROM orders "
        f"GROUP BY {day}, status, id % {SHARDS}"
    )
    if postgres:
        op.execute(_PG_FUNCTION)
        for statement in _PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in _TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON orders" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS order_day_stats_apply()")
    op.drop_table("order_day_stats")
    op.drop_index("ix_payment_dead_letters_created", table_name="payment_dead_letters")
    with op.batch_alter_table("payment_dead_letters") as batch:
        batch.drop_column("retried_at")
        batch.drop_column("kind")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("refund_started_at")
    op.drop_index("ix_orders_amount", table_name="orders")
    op.drop_index("ix_orders_updated", table_name="orders")
