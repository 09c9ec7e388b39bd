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

On PostgreSQL the counts are filled in after the triggers exist, in batches of orders by
id, with writes going on (see `_PG_BATCH`: a writer waits for one batch at most); the
triggers count an order once its batch is done, and every order created after the
migration began. SQLite fills them in one statement (one writer at a time anyway).

Revision ID: 0005_orders_at_scale
Revises: 0004_order_events
Create Date: 2026-12-06
"""

import os

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



def _pg_function(counted: str = "true") -> str:
    """The trigger function; `counted` says which orders (by `{id}`) it counts: all, once
    the backfill is done; while it runs, those it has counted and those created since."""
    old, new = counted.format(id="OLD.id"), counted.format(id="NEW.id")
    lookup = (
        ""
        if counted == "true"
        else "SELECT b.done_below, b.horizon INTO v_done_below, v_horizon "
        "FROM order_counts_backfill b;"
    )
    return f"""
CREATE OR REPLACE FUNCTION order_counts_apply() RETURNS trigger AS $$
DECLARE
  v_done_below bigint;
  v_horizon bigint;
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.status = NEW.status AND OLD.user_id = NEW.user_id THEN
    RETURN NULL;
  END IF;
  {lookup}
  INSERT INTO order_status_counts AS c (status, shard, orders)
  SELECT d.status, d.shard, sum(d.n)
  FROM (
    SELECT OLD.status AS status, OLD.id % {SHARDS} AS shard, -1 AS n
    WHERE TG_OP IN ('UPDATE', 'DELETE') AND {old}
    UNION ALL
    SELECT NEW.status, NEW.id % {SHARDS}, 1 WHERE TG_OP IN ('INSERT', 'UPDATE') AND {new}
  ) AS d
  GROUP BY d.status, d.shard
  ORDER BY d.status, d.shard
  ON CONFLICT (status, shard) DO UPDATE SET orders = c.orders + EXCLUDED.orders;
  INSERT INTO user_order_counts AS c (user_id, status, orders)
  SELECT d.user_id, d.status, sum(d.n)
  FROM (
    SELECT OLD.user_id AS user_id, OLD.status AS status, -1 AS n
    WHERE TG_OP IN ('UPDATE', 'DELETE') AND {old}
    UNION ALL
    SELECT NEW.user_id, NEW.status, 1 WHERE TG_OP IN ('INSERT', 'UPDATE') AND {new}
  ) AS d
  GROUP BY d.user_id, d.status
  ORDER BY d.user_id, d.status
  ON CONFLICT (user_id, status) DO UPDATE SET orders = c.orders + EXCLUDED.orders;
  RETURN NULL;
END
$$ LANGUAGE plpgsql
"""


# While the backfill runs: an order is counted by the triggers once its batch is done
# (id below done_below) or when it is newer than every order the backfill counts.
_WHILE_BACKFILLING = "({id} < v_done_below OR {id} > v_horizon)"
# Orders (by id) per batch; ORDER_COUNTS_BATCH changes it (tests make batches small).
BATCH = int(os.environ.get("ORDER_COUNTS_BATCH", "20000"))
# One batch, one transaction (a DO block: its statements run in this order): the batch's
# orders are locked FOR SHARE first, so a writer of one of them either committed before
# (the batch counts what it wrote; its trigger, which read the old done_below, counted
# nothing) or waits for the batch (then its trigger reads the new done_below and counts
# its change); then the status counts, then the user counts, each in key order, as the
# triggers take them: no writer can hold one of them while waiting for the batch (one
# statement with the upserts as CTEs ran them in no set order, and deadlocked with a
# writer at 10M orders). Writers wait for one batch at most.
_PG_BATCH = f"""
DO $$
BEGIN
  PERFORM 1 FROM orders WHERE id >= {{start}} AND id < {{stop}} FOR SHARE;
  INSERT INTO order_status_counts AS c (status, shard, orders)
  SELECT status, id % {SHARDS}, count(*) FROM orders
  WHERE id >= {{start}} AND id < {{stop}} GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (status, shard) DO UPDATE SET orders = c.orders + EXCLUDED.orders;
  INSERT INTO user_order_counts AS c (user_id, status, orders)
  SELECT user_id, status, count(*) FROM orders
  WHERE id >= {{start}} AND id < {{stop}} GROUP BY 1, 2 ORDER BY 1, 2
  ON CONFLICT (user_id, status) DO UPDATE SET orders = c.orders + EXCLUDED.orders;
  UPDATE order_counts_backfill SET done_below = {{stop}};
END
$$
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
    if not postgres:
        # SQLite: one writer at a time; the migration holds it.
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
        for name, table, cols in _INDEXES:
            op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({cols})")
        op.execute("DROP INDEX IF EXISTS ix_order_lines_sku")
        return
    op.create_table(
        "order_counts_backfill",
        sa.Column("done_below", sa.BigInteger, nullable=False),
        sa.Column("horizon", sa.BigInteger, nullable=False),
    )
    op.execute(_pg_function(_WHILE_BACKFILLING))
    for statement in _PG_TRIGGERS:
        op.execute(statement)
    # Creating the triggers waited for the writers in flight and holds back new ones to
    # the commit: every order there is now has an id up to the horizon, every later one
    # a greater id.
    op.execute(
        "INSERT INTO order_counts_backfill (done_below, horizon) "
        "SELECT 0, coalesce(max(id), 0) FROM orders"
    )
    trigram = _trigram_available()
    bind = op.get_bind()
    # Commits what came before (the tables and their triggers); the counts are filled in
    # and the indexes built with writes going on.
    with op.get_context().autocommit_block():
        start, horizon = bind.execute(
            sa.text("SELECT done_below, horizon FROM order_counts_backfill")
        ).one()
        while start <= horizon:
            # Whole numbers of our own, formatted in (a DO block takes no parameters).
            batch = _PG_BATCH.format(start=int(start), stop=int(start + BATCH))
            bind.execute(sa.text(batch))
            start += BATCH
        # Done: every order counts. (order_counts_backfill stays, one row: a writer that
        # began under the old function may still read it.)
        op.execute(_pg_function())
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
        op.execute("DROP TABLE IF EXISTS order_counts_backfill")
        op.execute(f"DROP INDEX IF EXISTS {_TRGM_INDEX}")
    op.drop_table("user_order_counts")
    op.drop_table("order_status_counts")
    op.execute("CREATE INDEX IF NOT EXISTS ix_order_lines_sku ON order_lines (sku)")
    for name, _, _ in _INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
