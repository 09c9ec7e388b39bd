"""Counts at commit: the triggers that keep the order counts (`order_day_stats` from
0003, `order_status_counts` and `user_order_counts` from 0005) run when the writing
transaction commits instead of at the statement that changed the order.

Why: a counter row is locked from the moment a trigger upserts it until the commit.
Fired at the statement, it stayed locked for the rest of the transaction: a webhook
changes the order's status, then writes its event (taking the event log's lock), then
commits, each a round trip through a busy event loop; every other transaction counting
into the same row (the same customer and status, above all) waited all that time. Deferred
to the commit, the counter rows are taken last, and held only while the commit itself
runs. The counts are the same: a deferred row trigger still runs once per changed row, in
the order the changes were made, inside the same transaction, before it is visible.

On PostgreSQL the triggers become `CONSTRAINT TRIGGER ... DEFERRABLE INITIALLY DEFERRED`
(the same functions). One consequence: a transaction that changes orders and then reads
or rebuilds the counts itself does not see its own changes counted yet; it must run
`SET CONSTRAINTS ALL IMMEDIATE` first (bench/scaledata.py's recount does). The service
never reads counts in a writing transaction. SQLite has one writer at a time and no deferred triggers: nothing
changes there. Replacing a trigger takes a short ACCESS EXCLUSIVE lock on `orders` (no
data is read), in one transaction: no change is ever counted twice or missed.

Revision ID: 0006_counts_at_commit
Revises: 0005_orders_at_scale
Create Date: 2026-12-06
"""

from alembic import op

revision = "0006_counts_at_commit"
down_revision = "0005_orders_at_scale"
branch_labels = None
depends_on = None

# name -> (events, function): the six triggers of 0003 and 0005, as they were made there.
_TRIGGERS = {
    "orders_day_stats_insert": ("INSERT", "order_day_stats_apply"),
    "orders_day_stats_update": ("UPDATE OF status, created_at, amount_cents", "order_day_stats_apply"),
    "orders_day_stats_delete": ("DELETE", "order_day_stats_apply"),
    "orders_counts_insert": ("INSERT", "order_counts_apply"),
    "orders_counts_update": ("UPDATE OF status, user_id", "order_counts_apply"),
    "orders_counts_delete": ("DELETE", "order_counts_apply"),
}


def _replace(deferred: bool) -> None:
    for name, (events, function) in _TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON orders")
        kind = "CONSTRAINT TRIGGER" if deferred else "TRIGGER"
        timing = " DEFERRABLE INITIALLY DEFERRED" if deferred else ""
        op.execute(
            f"CREATE {kind} {name} AFTER {events} ON orders{timing} "
            f"FOR EACH ROW EXECUTE FUNCTION {function}()"
        )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _replace(deferred=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _replace(deferred=False)
