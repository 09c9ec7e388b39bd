"""Orders at scale: the indexes the orders list needs at millions of orders, and order
counts kept by triggers so that its totals never count the orders themselves.

Indexes (PostgreSQL builds them with CREATE INDEX CONCURRENTLY, outside the migration's
transaction: writes go on while they are built; a build that failed half-way leaves an
invalid index, which the next run drops and builds again):
- `ix_orders_oldest (created_at, id DESC)`, `ix_orders_amount_low (amount_cents, id DESC)`:
  the ascending sorts, whose ties break newest first, read in index order (no sort of a
  million tied amounts for page 1 of AMOUNT_LOW).
- `ix_order_lines_sku_order (sku, order_id)` replaces `ix_order_lines_sku (sku)`: a SKU
  search reaches the orders of the matching SKUs without reading the lines.
- PostgreSQL with pg_trgm available: `ix_users_email_trgm`, a GIN trigram index on
  `lower(email)`, for an admin's substring search of emails.

Counts: `order_status_counts (status, shard)` and `user_order_counts (user_id, status)`,
kept like `order_day_stats` (0003) by triggers on every insert, status or owner change and
delete, in the writing transaction. A change locks its counter rows in key order (status
counts, then user counts; within each, by key), so racing writers never deadlock.

The counts are filled in from the orders in the migration's transaction, after the
triggers exist: creating a trigger waits for the writers in flight and holds theirs back
until the commit (the aggregate over the orders: about 2 s at 10M orders on PostgreSQL).

Revision ID: 0005_orders_at_scale
Revises: 0004_order_events
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_orders_at_scale"
down_revision = "0004_order_events"
branch_labels = None
depends_on = None

SHARDS = 16

# (name, table, columns): the same on both backends.
_INDEXES = (
    ("ix_orders_oldest", "orders", "created_at, id DESC"),
    ("ix_orders_amount_low", "orders", "amount_cents, id DESC"),
    ("ix_order_lines_sku_order", "order_lines", "sku, order_id"),
)
_TRGM_INDEX = "ix_users_email_trgm"

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION order_counts_apply() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.status = NEW.status AND OLD.user_id = NEW.user_id THEN
    RETURN NULL;
  END IF;
  INSERT INTO order_status_counts AS c (status, shard, orders)
  SELECT d.status, d.shard, sum(d.n)
  FROM (
    SELECT OLD.status AS status, OLD.id % {SHARDS} AS shard, -1 AS n
    WHERE TG_OP IN ('UPDATE', 'DELETE')
    UNION ALL
    SELECT NEW.status, NEW.id % {SHARDS}, 1 WHERE TG_OP IN ('INSERT', 'UPDATE')
  ) AS d
  GROUP BY d.status, d.shard
  ORDER BY d.status, d.shard
  ON CONFLICT (status, shard) DO UPDATE SET orders = c.orders + EXCLUDED.orders;
  INSERT INTO user_order_counts AS c (user_id, status, orders)
  SELECT d.user_id, d.status, sum(d.n)
  FROM (
    SELECT OLD.user_id AS user_id, OLD.status AS status, -1 AS n
    WHERE TG_OP IN ('UPDATE', 'DELETE')
    UNION ALL
    SELECT NEW.user_id, NEW.status, 1 WHERE TG_OP IN ('INSERT', 'UPDATE')
  ) AS d
  GROUP BY d.user_id, d.status
  ORDER BY d.user_id, d.status
  ON CONFLICT (user_id, status) DO UPDATE SET orders = c.orders + EXCLUDED.orders;
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""
_PG_TRIGGERS = (
    "CREATE TRIGGER orders_counts_insert AFTER INSERT ON orders "
    "FOR EACH ROW EXECUTE FUNCTION order_counts_apply()",
    "CREATE TRIGGER orders_counts_update AFTER UPDATE OF status, user_id ON orders "
    "FOR EACH ROW EXECUTE FUNCTION order_counts_apply()",
    "CREATE TRIGGER orders_counts_delete AFTER DELETE ON orders "
    "FOR EACH ROW EXECUTE FUNCTION order_counts_apply()",
)

# SQLite has one writer at a time: no lock order to keep.
_S_STATUS = (
    "INSERT INTO order_status_counts (status, shard, orders) VALUES {rows} "
    "ON CONFLICT (status, shard) DO UPDATE SET orders = orders + excluded.orders"
)
_S_USER = (
    "INSERT INTO user_order_counts (user_id, status, orders) VALUES {rows} "
    "ON CONFLICT (user_id, status) DO UPDATE SET orders = orders + excluded.orders"
)
_S_OLD_STATUS = f"(OLD.status, OLD.id % {SHARDS}, -1)"
_S_NEW_STATUS = f"(NEW.status, NEW.id % {SHARDS}, 1)"
_S_OLD_USER = "(OLD.user_id, OLD.status, -1)"
_S_NEW_USER = "(NEW.user_id, NEW.status, 1)"


def _sqlite_body(status_rows: str, user_rows: str) -> str:
    return (
        f"BEGIN {_S_STATUS.format(rows=status_rows)}; {_S_USER.format(rows=user_rows)}; END"
    )


_SQLITE_TRIGGERS = (
    "CREATE TRIGGER orders_counts_insert AFTER INSERT ON orders "
    + _sqlite_body(_S_NEW_STATUS, _S_NEW_USER),
    "CREATE TRIGGER orders_counts_update AFTER UPDATE OF status, user_id ON orders "
    "WHEN OLD.status IS NOT NEW.status OR OLD.user_id IS NOT NEW.user_id "
    + _sqlite_body(f"{_S_OLD_STATUS}, {_S_NEW_STATUS}", f"{_S_OLD_USER}, {_S_NEW_USER}"),
    "CREATE TRIGGER orders_counts_delete AFTER DELETE ON orders "
    + _sqlite_body(_S_OLD_STATUS, _S_OLD_USER),
)
_TRIGGER_NAMES = ("orders_counts_insert", "orders_counts_update", "orders_counts_delete")


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _build_concurrently(name: str, ddl: str) -> None:
    """CREATE INDEX CONCURRENTLY `name`, dropping an invalid one a failed build left."""
    bind = op.get_bind()
    valid = bind.execute(
        sa.text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = :name AND pg_table_is_visible(c.oid)"
        ),
        {"name": name},
    ).scalar()
    if valid is True:
        return
    if valid is False:
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.execute(ddl)


def _trigram_available() -> bool:
    return bool(
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'"))
        .scalar()
    )


def upgrade() -> None:
    postgres = _postgres()
    op.create_table(
        "order_status_counts",
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True),
        sa.Column("orders", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "user_order_counts",
        sa.Column("user_id", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("orders", sa.Integer, nullable=False),
    )
    if postgres:
        op.execute(_PG_FUNCTION)
        for statement in _PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
    op.execute(
        "INSERT INTO order_status_counts (status, shard, orders) "
        f"SELECT status, id % {SHARDS}, count(*) FROM orders GROUP BY status, id % {SHARDS}"
    )
    op.execute(
        "INSERT INTO user_order_counts (user_id, status, orders) "
        "SELECT user_id, status, count(*) FROM orders GROUP BY user_id, status"
    )
    if not postgres:
        for name, table, cols in _INDEXES:
            op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({cols})")
        op.execute("DROP INDEX IF EXISTS ix_order_lines_sku")
        return
    trigram = _trigram_available()
    # Commits what came before (the counts and their triggers); the indexes are built
    # with writes going on.
    with op.get_context().autocommit_block():
        for name, table, cols in _INDEXES:
            _build_concurrently(name, f"CREATE INDEX CONCURRENTLY {name} ON {table} ({cols})")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_order_lines_sku")
        if trigram:
            op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            _build_concurrently(
                _TRGM_INDEX,
                f"CREATE INDEX CONCURRENTLY {_TRGM_INDEX} ON users "
                "USING gin (lower(email) gin_trgm_ops)",
            )


def downgrade() -> None:
    postgres = _postgres()
    for name in _TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON orders" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS order_counts_apply()")
        op.execute(f"DROP INDEX IF EXISTS {_TRGM_INDEX}")
    op.drop_table("user_order_counts")
    op.drop_table("order_status_counts")
    op.execute("CREATE INDEX IF NOT EXISTS ix_order_lines_sku ON order_lines (sku)")
    for name, _, _ in _INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
