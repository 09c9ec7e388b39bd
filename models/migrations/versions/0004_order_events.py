"""The outbox becomes the order event log: who did what to which order, kept for the
life of the order (docs/events.md).

Existing rows (status changes) are read back from their JSON payload: kind
STATUS_CHANGED, source SYSTEM (who acted was not recorded then). Rows of orders that no
longer exist are dropped (the log is deleted with its order from now on).

Revision ID: 0004_order_events
Revises: 0003_back_office
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_order_events"
down_revision = "0003_back_office"
branch_labels = None
depends_on = None

_NEW = (
    ("order_id", sa.Integer),
    ("user_id", sa.Integer),
    ("kind", sa.String(24)),
    ("source", sa.String(24)),
    ("actor_id", sa.Integer),
    ("status", sa.String(16)),
    ("previous_status", sa.String(16)),
    ("version", sa.Integer),
)
_REQUIRED = ("order_id", "user_id", "kind", "source", "status", "version")


def _field(name: str, as_int: bool) -> str:
    if op.get_bind().dialect.name == "postgresql":
        text = f"(payload::json->>'{name}')"
        return f"{text}::int" if as_int else text
    return f"json_extract(payload, '$.{name}')"


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        for name, type_ in _NEW:
            batch.add_column(sa.Column(name, type_, nullable=True))
    op.execute(
        "UPDATE outbox SET "
        f"order_id = {_field('order_id', True)}, user_id = {_field('user_id', True)}, "
        f"status = {_field('status', False)}, "
        f"previous_status = {_field('previous_status', False)}, "
        f"version = {_field('version', True)}, kind = 'STATUS_CHANGED', source = 'SYSTEM'"
    )
    op.execute("DELETE FROM outbox WHERE order_id IS NULL OR order_id NOT IN (SELECT id FROM orders)")
    # SQLite rebuilds the table (AUTOINCREMENT: a deleted row's id is never reused).
    with op.batch_alter_table(
        "outbox", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        for name in _REQUIRED:
            batch.alter_column(name, nullable=False)
        batch.create_foreign_key(
            "fk_outbox_order", "orders", ["order_id"], ["id"], ondelete="CASCADE"
        )
    op.create_index("ix_outbox_order", "outbox", ["order_id", "id"])
    op.create_index("ix_outbox_user", "outbox", ["user_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_user", table_name="outbox")
    op.drop_index("ix_outbox_order", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("fk_outbox_order", type_="foreignkey")
        for name, _ in reversed(_NEW):
            batch.drop_column(name)
