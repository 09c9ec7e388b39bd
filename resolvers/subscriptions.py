"""Live order status: the events one subscriber may see, checked event by event."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator

from infra.broker import SubscriberTooSlow
from models import queries
from models.rows import UserRow
from models.state import Role
from resolvers.context import RequestContext
from resolvers.errors import DomainError, NotFound, Unauthenticated
from resolvers.events import ORDER_STATUS_CHANNEL, StatusEvent
from resolvers.orders import parse_order_id

log = logging.getLogger("order_service.subscriptions")

# Duplicates (two relays, a replay after a Redis outage) arrive within seconds of the
# original; remembering the versions sent of this many orders is plenty.
SEEN_ORDERS = 10_000
_MAX_TRACKED_VERSION = 1024


class SubscriptionDropped(DomainError):
    default_message = (
        "Events came faster than this subscription read them; it was ended. "
        "Subscribe again and re-read the orders."
    )


class _SentVersions:
    """The versions sent per order, for the most recently changed orders.

    An older version that was not sent yet is still new: the relay publishes an event
    whose first publish failed seconds later, often after a newer version of the same
    order went out directly. Dropping it as stale would lose a committed change; clients
    order events by `version`.
    """

    def __init__(self, size: int) -> None:
        # A bit per version sent: an order changes a handful of times, so the mask is a
        # small int, as compact as the single version it replaces (every subscriber keeps
        # one of these).
        self._versions: OrderedDict[int, int] = OrderedDict()
        self._size = size

    def is_new(self, order_id: int, version: int) -> bool:
        if not 0 <= version < _MAX_TRACKED_VERSION:
            return True  # no order changes that often: not worth a mask that wide
        bit = 1 << version
        sent = self._versions.get(order_id, 0)
        if sent & bit:
            return False
        self._versions[order_id] = sent | bit
        self._versions.move_to_end(order_id)
        if len(self._versions) > self._size:
            self._versions.popitem(last=False)
        return True


def may_see(user: UserRow, event: StatusEvent) -> bool:
    return user.role == Role.ADMIN or event.user_id == user.id


async def order_status_events(
    ctx: RequestContext, raw_order_id: str | None
) -> AsyncGenerator[StatusEvent, None]:
    """Committed status changes of one order, or of every order the caller may see.

    Asking for an order the caller may not see is `NotFound`, as for a read. Who may see
    an event is decided when it arrives, with the caller's role as the database has it
    (re-read at most every `USER_RECHECK_SECONDS`): a demoted admin stops seeing other
    users' orders. An event is never sent twice; one that comes late (published by the
    relay after a newer version of its order) is still sent.
    """
    user = await ctx.require_user()
    services = ctx.services
    # Subscribe before the access check so that no change slips between the two.
    subscription = services.broker.subscribe(
        ORDER_STATUS_CHANNEL, ctx.settings.subscriber_queue_size
    )
    services.metrics.active_subscriptions.inc()
    try:
        only = None if raw_order_id is None else await _visible_order(ctx, user, raw_order_id)
        sent = _SentVersions(SEEN_ORDERS)
        async for raw in subscription:
            try:
                event = StatusEvent.decode(raw)
            except (ValueError, TypeError, KeyError):
                log.warning("dropping a malformed status event: %r", raw[:200])
                continue
            if only is not None and event.order_id != only:
                continue
            current = await ctx.current_user()
            if current is None:
                raise Unauthenticated("Your account no longer exists.")
            if may_see(current, event) and sent.is_new(event.order_id, event.version):
                yield event
    except SubscriberTooSlow as exc:
        raise SubscriptionDropped() from exc
    finally:
        subscription.close()
        services.metrics.active_subscriptions.dec()


async def _visible_order(ctx: RequestContext, user: UserRow, raw_id: str) -> int:
    order_id = parse_order_id(raw_id)
    async with ctx.services.db.connect() as conn:
        order = await queries.order_by_id(conn, order_id)
    if order is None or not (user.role == Role.ADMIN or order.user_id == user.id):
        raise NotFound("Order not found.")
    return order_id
