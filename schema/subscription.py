"""Subscription root: live order status."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from strawberry.types import Info

from resolvers.context import RequestContext
from resolvers.subscriptions import order_status_events, watch
from schema.feed import live_feed
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
        live = live_feed(info)
        member = live.join(info, OrderStatusEvent.of) if live is not None else None
        if live is not None and member is not None:
            # Over a websocket the feed writes this operation's frames itself (see
            # server/transport/live.py); this resolver only runs the checks, whose errors
            # reach the client as below, then hands the operation to its handler.
            try:
                watched = await watch(info.context, order_id, member.deliver)
            except BaseException:
                member.leave()
                raise
            raise live.handoff(watched, member)
        events = order_status_events(info.context, order_id)
        try:
            async for event in events:
                yield OrderStatusEvent.of(event)
        finally:
            # Unregister the subscriber now, not whenever the generator is collected.
            await events.aclose()
