"""GraphQL object types and their conversion from use-case results."""

from __future__ import annotations

from datetime import datetime

import strawberry

from models import rows as m
from models import state
from models.tables import as_utc
from resolvers.events import StatusEvent
from resolvers.orders import OrderPage as OrderPageResult
from resolvers.orders import OrderView

# The domain's enums are the schema's: registering them gives them their GraphQL names.
Role = state.Role
OrderStatus = state.OrderStatus
PaymentStatus = state.PaymentStatus
for _enum in (Role, OrderStatus, PaymentStatus):
    strawberry.enum(_enum, name=_enum.__name__)


@strawberry.type
class User:
    id: strawberry.ID
    email: str
    role: Role
    created_at: datetime

    @classmethod
    def of(cls, user: m.UserRow) -> User:
        return cls(
            id=strawberry.ID(str(user.id)),
            email=user.email,
            role=state.Role(user.role),
            created_at=as_utc(user.created_at),
        )


@strawberry.type
class Product:
    sku: str
    name: str
    price_cents: int

    @classmethod
    def of(cls, product: m.ProductRow) -> Product:
        return cls(sku=product.sku, name=product.name, price_cents=product.price_cents)


@strawberry.type
class OrderItem:
    sku: str
    qty: int
    unit_price_cents: int
    line_total_cents: int

    @classmethod
    def of(cls, line: m.LineRow) -> OrderItem:
        return cls(
            sku=line.sku,
            qty=line.qty,
            unit_price_cents=line.unit_price_cents,
            line_total_cents=line.unit_price_cents * line.qty,
        )


@strawberry.type
class Payment:
    id: strawberry.ID
    order_id: strawberry.ID
    amount_cents: int
    status: PaymentStatus
    redirect_url: str

    @classmethod
    def of(cls, payment: m.PaymentRow) -> Payment:
        return cls(
            id=strawberry.ID(payment.id),
            order_id=strawberry.ID(str(payment.order_id)),
            amount_cents=payment.amount_cents,
            status=state.PaymentStatus(payment.status),
            redirect_url=payment.redirect_url,
        )


@strawberry.type
class Order:
    id: strawberry.ID
    status: OrderStatus
    version: int
    client_token: str
    items: list[OrderItem]
    amount_cents: int
    user: User
    payment: Payment | None = strawberry.field(description="The latest payment, if any.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: OrderView) -> Order:
        o = view.order
        return cls(
            id=strawberry.ID(str(o.id)),
            status=state.OrderStatus(o.status),
            version=o.version,
            client_token=o.client_token,
            items=[OrderItem.of(line) for line in view.lines],
            amount_cents=o.amount_cents,
            # Not loaded when not asked for (see schema.selection); never resolved then.
            user=User.of(view.user) if view.user else None,  # type: ignore[arg-type]
            payment=Payment.of(view.payment) if view.payment else None,
            created_at=as_utc(o.created_at),
            updated_at=as_utc(o.updated_at),
        )


@strawberry.type
class OrderPage:
    items: list[Order]
    total: int
    page: int
    limit: int
    pages: int

    @classmethod
    def of(cls, result: OrderPageResult) -> OrderPage:
        return cls(
            items=[Order.of(v) for v in result.items],
            total=result.total,
            page=result.page,
            limit=result.limit,
            pages=result.pages,
        )


@strawberry.type
class AuthPayload:
    access_token: str
    token_type: str
    role: Role
    user: User


@strawberry.type
class OrderStatusEvent:
    order_id: strawberry.ID
    status: OrderStatus
    previous_status: OrderStatus
    version: int
    changed_at: datetime

    @classmethod
    def of(cls, event: StatusEvent) -> OrderStatusEvent:
        return cls(
            order_id=strawberry.ID(str(event.order_id)),
            status=state.OrderStatus(event.status),
            previous_status=state.OrderStatus(event.previous_status),
            version=event.version,
            changed_at=as_utc(event.changed_at),
        )
