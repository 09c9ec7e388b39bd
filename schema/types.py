"""GraphQL object types and their conversion from use-case results."""

from __future__ import annotations

from datetime import datetime

import strawberry

from models import rows as m
from models import state
from models.queries import DayStats
from models.tables import as_utc
from resolvers import events as ev
from resolvers import history
from resolvers.backoffice import DeadLetterPage as DeadLetterPageResult
from resolvers.context import RequestContext
from resolvers.events import StatusEvent
from resolvers.orders import OrderPage as OrderPageResult
from resolvers.orders import OrderView

# The domain's enums are the schema's: registering them gives them their GraphQL names.
Role = state.Role
OrderStatus = state.OrderStatus
PaymentStatus = state.PaymentStatus
OrderSort = state.OrderSort
OrderEventKind = ev.EventKind
EventSource = ev.EventSource
for _enum, _name in (
    (Role, "Role"),
    (OrderStatus, "OrderStatus"),
    (PaymentStatus, "PaymentStatus"),
    (OrderSort, "OrderSort"),
    (OrderEventKind, "OrderEventKind"),
    (EventSource, "EventSource"),
):
    strawberry.enum(_enum, name=_name)


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
    needs_refund: bool = strawberry.field(
        description="The money must go back to the customer (the order will not ship): "
        "an admin calls refundPayment."
    )

    @classmethod
    def of(cls, payment: m.PaymentRow) -> Payment:
        return cls(
            id=strawberry.ID(payment.id),
            order_id=strawberry.ID(str(payment.order_id)),
            amount_cents=payment.amount_cents,
            status=state.PaymentStatus(payment.status),
            redirect_url=payment.redirect_url,
            needs_refund=bool(payment.needs_refund),
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

    @strawberry.field(description="Every event of the order, oldest first.")
    async def history(self, info: strawberry.Info[RequestContext, None]) -> list[OrderEvent]:
        return [OrderEvent.of(e) for e in await history.of_order(info.context, int(self.id))]

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
    next_cursor: str | None = strawberry.field(
        description="Pass as `after` for the page that follows (same filter and sort); "
        "null on the last page."
    )
    total_is_exact: bool = strawberry.field(
        description="False when `total` (and `pages`) is an estimate: a text search with "
        "more than 10,000 matches."
    )

    @classmethod
    def of(cls, result: OrderPageResult) -> OrderPage:
        return cls(
            items=[Order.of(v) for v in result.items],
            total=result.total,
            page=result.page,
            limit=result.limit,
            pages=result.pages,
            next_cursor=result.next_cursor,
            total_is_exact=result.total_is_exact,
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
    cursor: str = strawberry.field(
        description="Where this event is in the log: resume after it with `after`."
    )

    @classmethod
    def of(cls, event: StatusEvent) -> OrderStatusEvent:
        return cls(
            order_id=strawberry.ID(str(event.order_id)),
            status=state.OrderStatus(event.status),
            # Only status changes are delivered here.
            previous_status=state.OrderStatus(event.previous_status or event.status),
            version=event.version,
            changed_at=as_utc(event.changed_at),
            cursor=cursor_of(event),
        )


def cursor_of(event: StatusEvent) -> str:
    # An event published by an older release has no place in the log: "" (not a cursor).
    return ev.encode_cursor(event.id) if event.id is not None else ""


@strawberry.type(description="One change of an order, as its history and `orderEvents` tell it.")
class OrderEvent:
    cursor: str
    order_id: strawberry.ID
    kind: OrderEventKind
    status: OrderStatus = strawberry.field(description="The order's status after the event.")
    previous_status: OrderStatus | None = strawberry.field(
        description="Set when the event changed the order's status."
    )
    version: int = strawberry.field(description="The order's version after the event.")
    at: datetime
    source: EventSource
    actor_id: strawberry.Private[int | None]

    @strawberry.field(
        description="Who acted: null for the provider and the system. A customer is shown "
        "only themself (an admin's identity is not revealed to customers)."
    )
    async def actor(self, info: strawberry.Info[RequestContext, None]) -> User | None:
        actor = await history.actor(info.context, self.actor_id)
        return User.of(actor) if actor is not None else None

    @classmethod
    def of(cls, event: StatusEvent) -> OrderEvent:
        return cls(
            cursor=cursor_of(event),
            order_id=strawberry.ID(str(event.order_id)),
            kind=ev.EventKind(event.kind),
            status=state.OrderStatus(event.status),
            previous_status=(
                state.OrderStatus(event.previous_status) if event.previous_status else None
            ),
            version=event.version,
            at=as_utc(event.changed_at),
            source=ev.EventSource(event.source),
            actor_id=event.actor_id,
        )


@strawberry.type
class OrderDayStats:
    day: str = strawberry.field(description="The UTC day of creation, YYYY-MM-DD.")
    status: OrderStatus
    orders: int
    amount_cents: int

    @classmethod
    def of(cls, row: DayStats) -> OrderDayStats:
        return cls(
            day=row.day,
            status=state.OrderStatus(row.status),
            orders=row.orders,
            amount_cents=row.amount_cents,
        )


@strawberry.type
class DeadLetter:
    id: strawberry.ID
    order_id: strawberry.ID
    payment_id: str
    attempts: int
    last_error: str
    created_at: datetime
    retried_at: datetime | None

    @classmethod
    def of(cls, row: m.DeadLetterRow) -> DeadLetter:
        return cls(
            id=strawberry.ID(str(row.id)),
            order_id=strawberry.ID(str(row.order_id)),
            payment_id=row.payment_id,
            attempts=row.attempts,
            last_error=row.last_error,
            created_at=as_utc(row.created_at),
            retried_at=as_utc(row.retried_at) if row.retried_at is not None else None,
        )


@strawberry.type
class DeadLetterPage:
    items: list[DeadLetter]
    total: int
    page: int
    limit: int
    pages: int

    @classmethod
    def of(cls, result: DeadLetterPageResult) -> DeadLetterPage:
        return cls(
            items=[DeadLetter.of(r) for r in result.items],
            total=result.total,
            page=result.page,
            limit=result.limit,
            pages=result.pages,
        )
