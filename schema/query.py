"""Query root."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from resolvers import backoffice, catalog, orders
from resolvers.context import RequestContext
from schema.selection import order_include
from schema.types import (
    DeadLetterPage,
    Order,
    OrderDayStats,
    OrderPage,
    OrderSort,
    OrderStatus,
    Product,
    User,
)

Ctx = Info[RequestContext, None]


@strawberry.type
class Query:
    @strawberry.field(description="The signed-in user.")
    async def me(self, info: Ctx) -> User:
        return User.of(await info.context.require_user())

    @strawberry.field(description="The catalog, by SKU.")
    async def products(self, info: Ctx) -> list[Product]:
        return [Product.of(p) for p in await catalog.list_products(info.context)]

    @strawberry.field(description="One order: your own, or any for an admin.")
    async def order(self, info: Ctx, id: strawberry.ID) -> Order | None:
        view = await orders.get_order(info.context, id, order_include(info))
        return Order.of(view)

    @strawberry.field(
        description="Your orders (an admin sees all), newest first unless `sort` says "
        "otherwise (ties by id, newest first). `q` matches an order id, a SKU, or for an "
        "admin the owner's email. `createdFrom` is inclusive, `createdTo` exclusive. "
        "`after` (a `nextCursor` of the same filter and sort) starts the page right after "
        "that order, at any depth; `page` is then ignored."
    )
    async def orders(
        self,
        info: Ctx,
        status: OrderStatus | None = None,
        q: str | None = None,
        page: int = 1,
        limit: int = 10,
        sort: OrderSort | None = OrderSort.NEWEST,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        after: str | None = None,
    ) -> OrderPage:
        result = await orders.list_orders(
            info.context,
            status=status,
            q=q,
            page=page,
            limit=limit,
            include=order_include(info, "items"),
            sort=sort or OrderSort.NEWEST,
            created_from=created_from,
            created_to=created_to,
            after=after,
        )
        return OrderPage.of(result)

    @strawberry.field(
        description="Orders and their amounts per UTC day of creation and current status, "
        "for orders created in [from, to) (at most 366 days); ADMIN only."
    )
    async def order_stats(
        self,
        info: Ctx,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
    ) -> list[OrderDayStats]:
        rows = await backoffice.order_stats(info.context, from_, to)
        return [OrderDayStats.of(r) for r in rows]

    @strawberry.field(
        description="Payments and refunds the provider never accepted, newest first; ADMIN only."
    )
    async def payment_dead_letters(
        self, info: Ctx, page: int = 1, limit: int = 20
    ) -> DeadLetterPage:
        result = await backoffice.dead_letters(info.context, page=page, limit=limit)
        return DeadLetterPage.of(result)
