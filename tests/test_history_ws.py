# ruff: noqa: F811 (the fixtures of test_subscriptions, taken as arguments)
"""Resumable subscriptions over real websockets (issue 16): replay then live on both
protocols, cursor errors with their codes. Shares test_subscriptions' live server setup."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from models.tables import OutboxEvent, utcnow
from tests.live import LiveServer
from tests.live_api import LiveClient
from tests.test_subscriptions import api, module_database, server  # noqa: F401 (fixtures)
from tests.ws_client import PROTOCOLS, WSClient

pytestmark = pytest.mark.timeout(60)

EVENTS = """subscription($orderId: ID, $after: String) {
  orderEvents(orderId: $orderId, after: $after) { cursor orderId kind status previousStatus version }
}"""
STATUS = """subscription($orderId: ID, $after: String) {
  orderStatusChanged(orderId: $orderId, after: $after) { cursor orderId status previousStatus }
}"""
WITH_ACTOR = """subscription($after: String) {
  orderEvents(after: $after) { cursor kind source actor { email } }
}"""
HISTORY = "query($id: ID!) { order(id: $id) { history { cursor kind } } }"


async def _history(api: LiveClient, token: str, order_id: str) -> list[dict[str, Any]]:
    return list((await api.execute(HISTORY, {"id": order_id}, token)).ok()["order"]["history"])


async def _error(ws: WSClient, op: str) -> dict[str, Any]:
    message = await ws.receive(op)
    errors = message.payload if message.type == "error" else message.payload.get("errors")
    assert errors, message
    return dict(errors[0])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_replay_then_live_on_both_subscriptions(
    server: LiveServer, api: LiveClient, protocol: str
) -> None:
    user, admin = await api.new_user(), await api.new_admin()
    order = await api.new_order(user)
    [created] = await _history(api, user, order["id"])
    (await api.move(admin, order["id"], "PAID", 1)).ok()
    async with WSClient.connect(server.ws_url, user, protocol=protocol) as ws:
        every = await ws.subscribe(EVENTS, {"after": created["cursor"]})
        status = await ws.subscribe(STATUS, {"orderId": order["id"], "after": created["cursor"]})
        paid = (await ws.next_data(every))["orderEvents"]
        assert (paid["kind"], paid["status"], paid["previousStatus"]) == (
            "STATUS_CHANGED", "PAID", "PENDING",
        )  # fmt: skip
        assert (await ws.next_data(status))["orderStatusChanged"] == {
            "cursor": paid["cursor"],
            "orderId": order["id"],
            "status": "PAID",
            "previousStatus": "PENDING",
        }
        await api.subscribed(2)
        second = await api.new_order(user)
        (await api.move(admin, order["id"], "SHIPPED", 2)).ok()
        got = [(await ws.next_data(every))["orderEvents"] for _ in range(2)]
        assert [(e["orderId"], e["kind"]) for e in got] == [
            (second["id"], "CREATED"),
            (order["id"], "STATUS_CHANGED"),
        ]
        shipped = (await ws.next_data(status))["orderStatusChanged"]
        assert (shipped["status"], shipped["cursor"]) == ("SHIPPED", got[1]["cursor"])
        await ws.expect_nothing(every, 0.2)
        await ws.expect_nothing(status, 0.1)


async def test_a_customer_never_learns_which_admin_acted(
    server: LiveServer, api: LiveClient
) -> None:
    user, admin = await api.new_user(), await api.new_admin()
    order = await api.new_order(user)
    [created] = await _history(api, user, order["id"])
    (await api.move(admin, order["id"], "PAID", 1)).ok()
    async with (
        WSClient.connect(server.ws_url, user) as user_ws,
        WSClient.connect(server.ws_url, admin) as admin_ws,
    ):
        mine = await user_ws.subscribe(WITH_ACTOR, {"after": created["cursor"]})
        theirs = await admin_ws.subscribe(WITH_ACTOR, {"after": created["cursor"]})
        seen_by_user = (await user_ws.next_data(mine))["orderEvents"]
        assert (seen_by_user["source"], seen_by_user["actor"]) == ("ADMIN", None)
        seen_by_admin = (await admin_ws.next_data(theirs))["orderEvents"]
        assert seen_by_admin["source"] == "ADMIN"
        assert seen_by_admin["actor"]["email"].startswith("admin")


async def test_cursor_errors_have_their_codes(
    server: LiveServer,
    api: LiveClient,
    module_database: str,
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    user = await api.new_user()
    order = await api.new_order(user)
    [created] = await _history(api, user, order["id"])
    async with WSClient.connect(server.ws_url, user) as ws:
        op = await ws.subscribe(EVENTS, {"after": "not-a-cursor"})
        assert (await _error(ws, op))["extensions"]["code"] == "BAD_USER_INPUT"
        engine = create_async_engine(module_database)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.order_id == int(order["id"]))  # type: ignore[arg-type]
                    .values(created_at=utcnow() - timedelta(days=8))
                )
        finally:
            await engine.dispose()
        op = await ws.subscribe(STATUS, {"after": created["cursor"]})
        assert (await _error(ws, op))["extensions"]["code"] == "CURSOR_EXPIRED"
