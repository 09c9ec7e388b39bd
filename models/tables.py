"""SQLModel tables. Timestamps are stored in UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import BigInteger, Column, DateTime, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | str) -> datetime:
    """A stored timestamp as an aware UTC datetime. asyncpg gives one; SQLite gives the
    text SQLAlchemy stored, or a naive datetime through the ORM: the UTC wall clock."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _ts(**kw: object) -> Column:
    return Column(DateTime(timezone=True), nullable=False, **kw)  # type: ignore[arg-type]


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int = Field(default=None, primary_key=True)  # None until the insert assigns it
    email: str = Field(max_length=320, unique=True)
    password_hash: str = Field(max_length=100)
    role: str = Field(max_length=10, default="USER")
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Product(SQLModel, table=True):
    __tablename__ = "products"

    sku: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    price_cents: int
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Order(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("user_id", "client_token", name="uq_orders_user_client_token"),
        Index("ix_orders_created", "created_at", "id"),
        Index("ix_orders_user_created", "user_id", "created_at", "id"),
        Index("ix_orders_status_created", "status", "created_at", "id"),
        # The back office's sorts (migration 0003_back_office).
        Index("ix_orders_updated", "updated_at", "id"),
        Index("ix_orders_amount", "amount_cents", "id"),
        # Sorts whose tie-break runs the other way (migration 0005_orders_at_scale):
        # OLDEST and AMOUNT_LOW are ascending, ties newest first.
        Index("ix_orders_oldest", "created_at", text("id DESC")),
        Index("ix_orders_amount_low", "amount_cents", text("id DESC")),
    )

    id: int = Field(default=None, primary_key=True)  # None until the insert assigns it
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    status: str = Field(max_length=16, default="PENDING")
    version: int = Field(default=1)
    client_token: str = Field(max_length=128)
    items_fingerprint: str = Field(max_length=64)
    amount_cents: int
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class OrderLine(SQLModel, table=True):
    __tablename__ = "order_lines"
    __table_args__ = (
        Index("ix_order_lines_order", "order_id"),
        # A SKU search: the orders having lines with these SKUs (0005_orders_at_scale).
        Index("ix_order_lines_sku_order", "sku", "order_id"),
    )

    id: int = Field(default=None, primary_key=True)  # None until the insert assigns it
    order_id: int = Field(foreign_key="orders.id", ondelete="CASCADE")
    sku: str = Field(max_length=64)
    qty: int
    unit_price_cents: int


# The rows the partial unique index uq_payments_order_pending covers (at most one PENDING
# payment per order); an insert names it to do nothing on that conflict.
PENDING_ONLY = text("status = 'PENDING'")


class Payment(SQLModel, table=True):
    __tablename__ = "payments"
    __table_args__ = (
        Index("ix_payments_order_created", "order_id", "created_at"),
        # At most one PENDING payment per order (migration 0002).
        Index(
            "uq_payments_order_pending",
            "order_id",
            unique=True,
            sqlite_where=PENDING_ONLY,
            postgresql_where=PENDING_ONLY,
        ),
    )

    id: str = Field(primary_key=True, max_length=64)
    order_id: int = Field(foreign_key="orders.id", ondelete="CASCADE")
    amount_cents: int
    status: str = Field(max_length=16, default="PENDING")
    redirect_url: str = Field(max_length=2048)
    provider_reference: str | None = Field(default=None, max_length=200)
    needs_refund: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # When a refundPayment call claimed the refund (asking the provider now); cleared when
    # it ends. A claim older than the provider's whole retry budget is abandoned.
    refund_started_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


DEAD_LETTER_PAYMENT = "payment"
DEAD_LETTER_REFUND = "refund"


class PaymentDeadLetter(SQLModel, table=True):
    """A payment (or a refund, `kind`) the provider never accepted, after every retry."""

    __tablename__ = "payment_dead_letters"
    __table_args__ = (Index("ix_payment_dead_letters_created", "created_at", "id"),)

    id: int = Field(default=None, primary_key=True)  # None until the insert assigns it
    order_id: int = Field(index=True)
    payment_id: str = Field(max_length=64)
    attempts: int
    last_error: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    kind: str = Field(default=DEAD_LETTER_PAYMENT, max_length=16)
    retried_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


# Rows of order_day_stats per (day, status): writers of one day spread over this many, so
# that they do not all wait for one row's lock.
STATS_SHARDS = 16


class OrderDayStats(SQLModel, table=True):
    """Orders and their amounts per UTC day of creation and current status, kept by
    database triggers on `orders` (migration 0003_back_office) in the writing transaction:
    orderStats reads at most a few thousand of these instead of a year of orders."""

    __tablename__ = "order_day_stats"

    day: date = Field(primary_key=True)
    status: str = Field(primary_key=True, max_length=16)
    shard: int = Field(primary_key=True)
    orders: int
    amount_cents: int = Field(sa_column=Column(BigInteger, nullable=False))


class OrderMonthStats(SQLModel, table=True):
    """Orders per UTC month of creation (its first day), current status and shard, kept by
    the same kind of triggers (migration 0007_order_month_stats): a deep page of the date
    sorts finds its month in a few dozen rows a year, then its day in order_day_stats."""

    __tablename__ = "order_month_stats"

    month: date = Field(primary_key=True)
    status: str = Field(primary_key=True, max_length=16)
    shard: int = Field(primary_key=True)
    orders: int = Field(sa_column=Column(BigInteger, nullable=False))


class OrderStatusCount(SQLModel, table=True):
    """How many orders have each status, kept by triggers on `orders` (migration
    0005_orders_at_scale) in the writing transaction: the unfiltered and per-status totals
    of the orders list sum at most a few dozen rows. Sharded like order_day_stats."""

    __tablename__ = "order_status_counts"

    status: str = Field(primary_key=True, max_length=16)
    shard: int = Field(primary_key=True)
    orders: int = Field(sa_column=Column(BigInteger, nullable=False))


class UserOrderCount(SQLModel, table=True):
    """How many orders each user has per status, kept by the same triggers: the total of
    "my orders" (and of my orders with a status) is one or a few rows."""

    __tablename__ = "user_order_counts"

    user_id: int = Field(primary_key=True)
    status: str = Field(primary_key=True, max_length=16)
    orders: int


class WebhookDelivery(SQLModel, table=True):
    """The webhook inbox: one row per distinct delivery, written with its effect."""

    __tablename__ = "webhook_inbox"

    delivery_key: str = Field(primary_key=True, max_length=200)
    payment_id: str = Field(max_length=64)
    status: str = Field(max_length=16)
    outcome: str = Field(max_length=32)
    received_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class OutboxEvent(SQLModel, table=True):
    """The order event log (docs/events.md): one row per committed change of an order,
    written in the transaction that made it. The relay publishes what the request path
    did not (`published_at`); `Order.history` reads it; a subscription resumes from it.

    Rows are kept for the life of their order (deleted with it); `EVENT_REPLAY_DAYS`
    bounds how far back a subscription may resume, not what is kept. `id` is the cursor:
    ids are handed out in commit order (see `resolvers.events.record`).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_unpublished", "published_at", "id"),
        Index("ix_outbox_order", "order_id", "id"),
        Index("ix_outbox_user", "user_id", "id"),
        # SQLite: never reuse the id of a deleted row (a cursor names it).
        {"sqlite_autoincrement": True},
    )

    id: int = Field(default=None, primary_key=True)  # None until the insert assigns it
    topic: str = Field(max_length=64)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    published_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    order_id: int = Field(foreign_key="orders.id", ondelete="CASCADE")
    user_id: int  # the order's owner: who may see the event besides admins
    kind: str = Field(max_length=24)
    source: str = Field(max_length=24)
    actor_id: int | None = Field(default=None)
    status: str = Field(max_length=16)
    previous_status: str | None = Field(default=None, max_length=16)
    version: int


DEFAULT_CATALOG = (
    ("WIDGET-001", "Widget", 1000),
    ("GADGET-002", "Gadget", 1000),
)
