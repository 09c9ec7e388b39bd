"""Initial schema: users, catalog, orders, payments, webhook inbox, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(100), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        _ts("created_at"),
    )
    products = op.create_table(
        "products",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("price_cents", sa.Integer, nullable=False),
        _ts("updated_at"),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("client_token", sa.String(128), nullable=False),
        sa.Column("items_fingerprint", sa.String(64), nullable=False),
        sa.Column("amount_cents", sa.Integer, nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("user_id", "client_token", name="uq_orders_user_client_token"),
    )
    op.create_index("ix_orders_created", "orders", ["created_at", "id"])
    op.create_index("ix_orders_user_created", "orders", ["user_id", "created_at", "id"])
    op.create_index("ix_orders_status_created", "orders", ["status", "created_at", "id"])
    op.create_table(
        "order_lines",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
        sa.Column("unit_price_cents", sa.Integer, nullable=False),
    )
    op.create_index("ix_order_lines_order", "order_lines", ["order_id"])
    op.create_index("ix_order_lines_sku", "order_lines", ["sku"])
    op.create_table(
        "payments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("amount_cents", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("redirect_url", sa.String(2048), nullable=False),
        sa.Column("provider_reference", sa.String(200), nullable=True),
        sa.Column("needs_refund", sa.Boolean, nullable=False, server_default=sa.false()),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_index("ix_payments_order_created", "payments", ["order_id", "created_at"])
    op.create_table(
        "payment_dead_letters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Integer, nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        _ts("created_at"),
    )
    op.create_index("ix_payment_dead_letters_order_id", "payment_dead_letters", ["order_id"])
    op.create_table(
        "webhook_inbox",
        sa.Column("delivery_key", sa.String(200), primary_key=True),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        _ts("received_at"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        _ts("created_at"),
        _ts("published_at", nullable=True),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])

    now = datetime.now(UTC)
    op.bulk_insert(
        products,
        [
            {"sku": "WIDGET-001", "name": "Widget", "price_cents": 1000, "updated_at": now},
            {"sku": "GADGET-002", "name": "Gadget", "price_cents": 1000, "updated_at": now},
        ],
    )


def downgrade() -> None:
    for table in (
        "outbox",
        "webhook_inbox",
        "payment_dead_letters",
        "payments",
        "order_lines",
        "orders",
        "products",
        "users",
    ):
        op.drop_table(table)
