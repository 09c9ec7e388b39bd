"""Rows as the request paths read them: slotted dataclasses, built from driver rows.

They mirror the SQLModel tables (models.tables) column for column, in the order of the
`*_COLUMNS` lists, which the statements select. The password hash is not among a user's
columns here: nothing on a request path needs it but login, which reads it on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.sql import Row

USER_COLUMNS = "id, email, role, created_at"
PRODUCT_COLUMNS = "sku, name, price_cents, updated_at"
ORDER_COLUMNS = (
    "id, user_id, status, version, client_token, items_fingerprint, amount_cents, "
    "created_at, updated_at"
)
LINE_COLUMNS = "id, order_id, sku, qty, unit_price_cents"
OUTBOX_COLUMNS = "id, payload, created_at"
PAYMENT_COLUMNS = (
    "id, order_id, amount_cents, status, redirect_url, provider_reference, needs_refund, "
    "created_at, updated_at"
)


def ts(value: Any) -> datetime:
    """A timestamp column as an aware UTC datetime: asyncpg gives one; SQLite gives the
    text SQLAlchemy stored (the UTC wall clock)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(slots=True)
class UserRow:
    id: int
    email: str
    role: str
    created_at: datetime

    @classmethod
    def of(cls, row: Row) -> UserRow:
        return cls(row[0], row[1], row[2], ts(row[3]))


@dataclass(slots=True)
class OrderRow:
    id: int
    user_id: int
    status: str
    version: int
    client_token: str
    items_fingerprint: str
    amount_cents: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Row) -> OrderRow:
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], row[6], ts(row[7]), ts(row[8]))


@dataclass(slots=True)
class LineRow:
    id: int | None
    order_id: int
    sku: str
    qty: int
    unit_price_cents: int

    @classmethod
    def of(cls, row: Row) -> LineRow:
        return cls(row[0], row[1], row[2], row[3], row[4])


@dataclass(slots=True)
class PaymentRow:
    id: str
    order_id: int
    amount_cents: int
    status: str
    redirect_url: str
    provider_reference: str | None
    needs_refund: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Row) -> PaymentRow:
        return cls(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            bool(row[6]),
            ts(row[7]),
            ts(row[8]),
        )


@dataclass(slots=True)
class OutboxRow:
    id: int
    payload: str
    created_at: datetime

    @classmethod
    def of(cls, row: Row) -> OutboxRow:
        return cls(row[0], row[1], ts(row[2]))


@dataclass(slots=True)
class ProductRow:
    sku: str
    name: str
    price_cents: int
    updated_at: datetime

    @classmethod
    def of(cls, row: Row) -> ProductRow:
        return cls(row[0], row[1], row[2], ts(row[3]))
