"""Query root."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from resolvers import catalog, orders
from resolvers.context import RequestContext
from schema.selection import order_include
from schema.types import Order, OrderPage, OrderStatus, Product, User

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
        description="Your orders (an admin sees all), newest first. `q` matches an order id, "
        "a SKU, or for an admin the owner's email."
    )
    async def orders(
        self,
        info: Ctx,
        status: OrderStatus | None = None,
        q: str | None = None,
        page: int = 1,
        limit: int = 10,
    ) -> OrderPage:
        result = await orders.list_orders(
            info.context,
            status=status,
            q=q,
            page=page,
            limit=limit,
            include=order_include(info, "items"),
        )
        return OrderPage.of(result)
