"""Subscription root: live order status."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from strawberry.types import Info

from models.state import Role
from resolvers import orders
from resolvers.context import RequestContext
from resolvers.events import ORDER_STATUS_CHANNEL, StatusEvent
from resolvers.orders import Include
from schema.types import OrderStatusEvent

Ctx = Info[RequestContext, None]


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Status changes of one order, or (orderId: null) of every order you may see."
    )
    async def order_status_changed(
        self, info: Ctx, order_id: strawberry.ID | None = None
    ) -> AsyncGenerator[OrderStatusEvent, None]:
        ctx = info.context
        user = await ctx.require_user()
        only: int | None = None
        if order_id is not None:
            view = await orders.get_order(ctx, order_id, Include(False, False, False))
            only = view.order.id
        services = ctx.services
        subscription = services.broker.subscribe(
            ORDER_STATUS_CHANNEL, ctx.settings.subscriber_queue_size
        )
        last_seen: dict[int, int] = {}
        try:
            async for raw in subscription:
                event = StatusEvent.decode(raw)
                if only is not None and event.order_id != only:
                    continue
                if user.role != Role.ADMIN and event.user_id != user.id:
                    continue
                # The relay may deliver an event again; a version seen is never sent twice.
                if last_seen.get(event.order_id, 0) >= event.version:
                    continue
                last_seen[event.order_id] = event.version
                yield OrderStatusEvent.of(event)
        finally:
            subscription.close()
