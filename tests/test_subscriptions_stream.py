"""The subscription stream itself (resolvers/subscriptions.py), in process: role changes
seen as events arrive, duplicates dropped (late versions still sent), clean unsubscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from sqlmodel import col
from starlette.applications import Starlette

from models.tables import User
from resolvers import context as context_module
from resolvers.context import RequestContext, Services
from resolvers.events import ORDER_STATUS_CHANNEL, StatusEvent
from resolvers.subscriptions import order_status_events
from tests.client import GraphQLClient

pytestmark = pytest.mark.timeout(60)


async def _listening(services: Services) -> None:
    # A Redis broker (TEST_REDIS_URL) needs its subscription before anything is published.
    for _ in range(200):
        if getattr(services.broker, "listening", True):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the broker never listened")


async def _stream(app: Starlette, token: str) -> AsyncGenerator[StatusEvent, None]:
    services: Services = app.state.services
    await _listening(services)
    ctx = RequestContext(services=services, request_id="test")
    ctx.authenticate(f"Bearer {token}")
    return order_status_events(ctx, None)


async def _next(stream: AsyncGenerator[StatusEvent, None]) -> StatusEvent:
    return await asyncio.wait_for(anext(stream), 5)


async def _until_subscribed(services: Services, count: int) -> None:
    for _ in range(200):
        if services.broker.fanout.count() == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} subscribers, have {services.broker.fanout.count()}")


async def test_a_demoted_admin_stops_seeing_other_users_orders(
    app: Starlette,
    client: GraphQLClient,
    admin_token: str,
    user_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(context_module, "USER_RECHECK_SECONDS", 0.0)
    services: Services = app.state.services
    other_admin = await client.make_admin("other-admin@example.com")
    users_order = (await client.create_order(user_token, "u1")).ok()["createOrder"]
    admins_order = (await client.create_order(admin_token, "a1")).ok()["createOrder"]

    stream = await _stream(app, admin_token)
    first = asyncio.ensure_future(_next(stream))
    await _until_subscribed(services, 1)
    (await client.move(other_admin, users_order["id"], "PAID", 1)).ok()
    assert (await first).order_id == int(users_order["id"])

    async with services.db.transaction() as session:
        await session.execute(
            update(User).where(col(User.email) == "admin@example.com").values(role="USER")
        )
    # The token still says ADMIN; the database does not.
    (await client.move(other_admin, users_order["id"], "SHIPPED", 2)).ok()
    (await client.move(other_admin, admins_order["id"], "PAID", 1)).ok()
    event = await _next(stream)
    assert (event.order_id, event.version) == (int(admins_order["id"]), 2)

    await stream.aclose()
    assert services.broker.fanout.count() == 0


async def test_duplicates_are_dropped_and_late_versions_still_sent(
    app: Starlette, admin_token: str
) -> None:
    services: Services = app.state.services
    stream = await _stream(app, admin_token)
    first = asyncio.ensure_future(_next(stream))
    await _until_subscribed(services, 1)

    def status_event(order_id: int, version: int) -> bytes:
        return StatusEvent(
            order_id=order_id,
            user_id=1,
            status="PAID",
            previous_status="PENDING",
            version=version,
            changed_at=datetime.now(UTC),
        ).encode()

    for raw in (
        status_event(7, 2),
        status_event(7, 2),  # a relay's second copy
        b"not json",
        status_event(7, 4),
        status_event(7, 3),  # late: its first publish failed, the relay sent it after 4
        status_event(8, 2),
        status_event(7, 3),  # and the relay's second copy of it
    ):
        await services.broker.publish(ORDER_STATUS_CHANNEL, raw)
    got = [await first, await _next(stream), await _next(stream), await _next(stream)]
    assert [(e.order_id, e.version) for e in got] == [(7, 2), (7, 4), (7, 3), (8, 2)]
    await stream.aclose()
    assert services.broker.fanout.count() == 0


async def test_an_unknown_order_is_not_found_and_leaves_no_subscriber(
    app: Starlette, user_token: str
) -> None:
    services: Services = app.state.services
    await _listening(services)
    ctx = RequestContext(services=services, request_id="test")
    ctx.authenticate(f"Bearer {user_token}")
    stream = order_status_events(ctx, "424242")
    with pytest.raises(Exception, match="Order not found") as failure:
        await _next(stream)
    assert getattr(failure.value, "code", None) == "NOT_FOUND"
    assert services.broker.fanout.count() == 0
