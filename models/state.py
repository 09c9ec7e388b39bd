"""Order and payment states, and the moves an order may make."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "ADMIN"
    USER = "USER"


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"


class OrderSort(StrEnum):
    """How a listing of orders is ordered; ties always break by id, newest first."""

    NEWEST = "NEWEST"
    OLDEST = "OLDEST"
    RECENTLY_UPDATED = "RECENTLY_UPDATED"
    AMOUNT_HIGH = "AMOUNT_HIGH"
    AMOUNT_LOW = "AMOUNT_LOW"


TRANSITIONS: dict[OrderStatus, tuple[OrderStatus, ...]] = {
    OrderStatus.PENDING: (OrderStatus.PAID, OrderStatus.CANCELLED),
    OrderStatus.PAID: (OrderStatus.SHIPPED, OrderStatus.CANCELLED),
    OrderStatus.SHIPPED: (OrderStatus.DELIVERED,),
    OrderStatus.DELIVERED: (),
    OrderStatus.CANCELLED: (),
}


def allowed_next(status: OrderStatus) -> tuple[OrderStatus, ...]:
    return TRANSITIONS[status]


def can_move(current: OrderStatus, target: OrderStatus) -> bool:
    return target in TRANSITIONS[current]


def sources_of(target: OrderStatus) -> tuple[OrderStatus, ...]:
    """The states from which `target` may be reached."""
    return tuple(s for s, nxt in TRANSITIONS.items() if target in nxt)
