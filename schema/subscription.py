"""Subscription root: live order events, resumable after a cursor (docs/events.md)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any

import strawberry
from strawberry.types import Info

from resolvers.context import RequestContext
from resolvers.subscriptions import order_status_events, watch
from schema.feed import live_feed
from schema.types import OrderEvent, OrderStatusEvent

Ctx = Info[RequestContext, None]

After = Annotated[
    str | None,
    strawberry.argument(
        description="A cursor from either subscription or from Order.history: the events "
        "after it are sent first, then the live ones."
    ),
]


async def _events(
    info: Ctx, order_id: str | None, after: str | None, status_only: bool, to_root: Callable
) -> AsyncGenerator[Any, None]:
    live = live_feed(info)
    member = live.join(info, to_root) if live is not None else None
    if live is not None and member is not None:
        # Over a websocket the feed writes this operation's frames itself (see
        # server/transport/live.py); this resolver only runs the checks and the replay,
        # whose errors reach the client as below, then hands the operation to its handler.
        try:
            watched = await watch(
                info.context,
                order_id,
                member.deliver,
                after=after,
                replay=member.send,
                status_only=status_only,
            )
        except BaseException:
            member.leave()
            raise
        raise live.handoff(watched, member)
    events = order_status_events(info.context, order_id, after=after, status_only=status_only)
    try:
        async for event in events:
            yield to_root(event)
    finally:
        # Unregister the subscriber now, not whenever the generator is collected.
        await events.aclose()


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Status changes of one order, or (orderId: null) of every order you may see."
    )
    async def order_status_changed(
        self, info: Ctx, order_id: strawberry.ID | None = None, after: After = None
    ) -> AsyncGenerator[OrderStatusEvent, None]:
        async for event in _events(info, order_id, after, True, OrderStatusEvent.of):
            yield event

    @strawberry.subscription(
        description="Every event (CREATED included) of one order, or (orderId: null) of "
        "every order you may see."
    )
    async def order_events(
        self, info: Ctx, order_id: strawberry.ID | None = None, after: After = None
    ) -> AsyncGenerator[OrderEvent, None]:
        async for event in _events(info, order_id, after, False, OrderEvent.of):
            yield event
