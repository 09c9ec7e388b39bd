"""Races resolve in the database, on both backends."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from models.tables import Order, OrderLine
from tests.client import GraphQLClient


async def test_20_racing_creates_with_one_token_make_one_order(
    client: GraphQLClient, user_token: str
) -> None:
    results = await asyncio.gather(
        *(client.create_order(user_token, "race", [("WIDGET-001", 2)]) for _ in range(20))
    )
    ids = {r.ok()["createOrder"]["id"] for r in results}
    assert len(ids) == 1
    async with client.app.state.services.db.read() as session:
        orders = (await session.execute(select(func.count()).select_from(Order))).scalar_one()
        lines = (await session.execute(select(func.count()).select_from(OrderLine))).scalar_one()
    assert (orders, lines) == (1, 1)


async def test_racing_creates_with_different_items_one_wins_the_rest_are_refused(
    client: GraphQLClient, user_token: str
) -> None:
    results = await asyncio.gather(
        *(client.create_order(user_token, "race2", [("WIDGET-001", n)]) for n in range(1, 9))
    )
    winners = [r for r in results if not r.errors]
    assert len(winners) == 1
    assert {r.code for r in results if r.errors} == {"IDEMPOTENCY_KEY_REUSED"}


async def test_10_racing_updates_with_one_version_give_exactly_one_success(
    client: GraphQLClient, user_token: str, admin_token: str
) -> None:
    order_id = (await client.create_order(user_token, "contended")).ok()["createOrder"]["id"]
    targets = ["PAID", "CANCELLED"] * 5
    results = await asyncio.gather(*(client.move(admin_token, order_id, t, 1) for t in targets))
    successes = [r for r in results if not r.errors]
    conflicts = [r for r in results if r.code == "VERSION_CONFLICT"]
    assert len(successes) == 1
    assert len(conflicts) == 9
    assert {c.ext["currentVersion"] for c in conflicts} == {2}
    final = (
        await client.execute(
            "query($id: ID!) { order(id: $id) { status version } }", {"id": order_id}, admin_token
        )
    ).ok()["order"]
    assert final == {
        "status": successes[0].data["updateOrderStatus"]["status"],
        "version": 2,
    }
