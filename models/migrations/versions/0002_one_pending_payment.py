"""At most one PENDING payment per order, so that racing initiatePayment calls resolve
in the database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PENDING = sa.text("status = 'PENDING'")


def upgrade() -> None:
    op.create_index(
        "uq_payments_order_pending",
        "payments",
        ["order_id"],
        unique=True,
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )


def downgrade() -> None:
    op.drop_index("uq_payments_order_pending", table_name="payments")
