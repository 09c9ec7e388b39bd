"""Subscriptions when things go wrong or pile up: many connections, several instances,
a Redis outage. Each test runs its own server(s)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL
from tests.live import LiveServer, live_server
from tests.live_api import LiveClient, live_client
from tests.redis_server import RedisServer
from tests.ws_client import LEGACY, ORDER_STATUS, PROTOCOLS, TRANSPORT, WSClient

pytestmark = pytest.mark.timeout(90)


def _env(database_url: str, redis_url: str | None, prefix: str | None = None) -> dict[str, str]:
    env = {"DATABASE_URL": database_url, "RATE_LIMIT_ORDERS_PER_MINUTE": "0"}
    if redis_url:
        env |= {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix or f"t-{uuid.uuid4().hex}:"}
    return env


async def _events(ws: WSClient, op: str, n: int, timeout: float = 10.0) -> list[tuple[str, int]]:
    got = []
    for _ in range(n):
        data = await ws.next_data(op, timeout)
        got.append((data["orderStatusChanged"]["orderId"], data["orderStatusChanged"]["version"]))
    return got


async def _redis_clients_of(server: LiveServer, redis_url: str) -> int:
    """Connections the server's broker holds to Redis (its clients are named by pid)."""
    admin = aioredis.Redis.from_url(redis_url)
    try:
        clients = await admin.client_list()
    finally:
        await admin.aclose()
    marker = f"-{server.process.pid}-"
    return sum(marker in c["name"] for c in clients)


@pytest.mark.slow
async def test_connect_subscribe_disconnect_cycles_leave_nothing_behind(
    database_url: str, tmp_path: Path
) -> None:
    with live_server(_env(database_url, REDIS_URL), tmp_path) as server:
        async with live_client(server.url, database_url) as api:
            user = await api.new_user()
            order = await api.new_order(user)

            async def cycle(i: int) -> None:
                protocol = PROTOCOLS[i % 2]
                ws = await WSClient.connect(server.ws_url, user, protocol=protocol)
                every = await ws.subscribe(ORDER_STATUS)
                await ws.subscribe(ORDER_STATUS, {"orderId": order["id"]})
                if i % 3 == 0:
                    await ws.complete(every)  # the client ends one; the close ends the rest
                await ws.close()

            for i in range(10):  # warm up: pools, caches, lazily created tasks
                await cycle(i)
            idle = {"subscribers": 0, "ws_connections": 0}
            before = await api.settled_runtime(idle)
            assert before["subscribers"] == 0 and before["ws_connections"] == 0
            redis_before = await _redis_clients_of(server, REDIS_URL) if REDIS_URL else 0

            for batch in range(0, 200, 4):  # a few at a time, as clients come
                await asyncio.gather(*(cycle(i) for i in range(batch, batch + 4)))

            after = await api.settled_runtime(before)
            assert after == before
            assert await api.gauge("graphql_active_subscriptions") == 0
            assert await api.gauge("graphql_ws_connections") == 0
            if REDIS_URL:
                assert await _redis_clients_of(server, REDIS_URL) == redis_before
                assert redis_before >= 1  # the listener is counted: the check can see


@pytest.mark.redis
@pytest.mark.skipif(not REDIS_URL, reason="needs TEST_REDIS_URL (the PostgreSQL + Redis pass)")
async def test_two_instances_deliver_each_change_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    assert REDIS_URL
    env = _env(database_url, REDIS_URL, prefix=f"t-{uuid.uuid4().hex}:")
    with (
        live_server(env, tmp_path, name="a") as a,
        live_server(env, tmp_path, name="b") as b,
    ):
        async with (
            live_client(a.url, database_url) as api_a,
            live_client(b.url, database_url) as api_b,
        ):
            user, admin = await api_a.new_user(), await api_a.new_admin()
            orders = [await api_b.new_order(user) for _ in range(3)]
            async with (
                WSClient.connect(a.ws_url, user, protocol=TRANSPORT) as user_on_a,
                WSClient.connect(a.ws_url, admin, protocol=LEGACY) as admin_on_a,
                WSClient.connect(b.ws_url, user, protocol=TRANSPORT) as user_on_b,
            ):
                ops = [
                    await user_on_a.subscribe(ORDER_STATUS),
                    await admin_on_a.subscribe(ORDER_STATUS, {"orderId": orders[1]["id"]}),
                    await user_on_b.subscribe(ORDER_STATUS),
                ]
                await api_a.subscribed(2)
                await api_b.subscribed(1)
                expected = []
                for i, order in enumerate(orders):
                    api = api_b if i % 2 == 0 else api_a  # changes through both instances
                    (await api.move(admin, order["id"], "PAID", 1)).ok()
                    (await api.move(admin, order["id"], "SHIPPED", 2)).ok()
                    expected += [(order["id"], 2), (order["id"], 3)]

                assert await _events(user_on_a, ops[0], 6) == expected
                assert await _events(admin_on_a, ops[1], 2) == [
                    (orders[1]["id"], 2),
                    (orders[1]["id"], 3),
                ]
                assert await _events(user_on_b, ops[2], 6) == expected
                # Past a relay pass or two: nothing comes a second time.
                await asyncio.sleep(3)
                await user_on_a.expect_nothing(ops[0], 0.1)
                await admin_on_a.expect_nothing(ops[1], 0.1)
                await user_on_b.expect_nothing(ops[2], 0.1)


@pytest.mark.slow
async def test_changes_during_a_redis_outage_reach_subscribers_after_it(
    database_url: str, tmp_path: Path
) -> None:
    with (
        RedisServer() as redis_server,
        live_server(_env(database_url, redis_server.url), tmp_path) as server,
    ):
        async with live_client(server.url, database_url) as api:
            user, admin = await api.new_user(), await api.new_admin()
            first, second = await api.new_order(user), await api.new_order(user)
            async with (
                WSClient.connect(server.ws_url, user, protocol=TRANSPORT) as user_ws,
                WSClient.connect(server.ws_url, admin, protocol=LEGACY) as admin_ws,
            ):
                user_op = await user_ws.subscribe(ORDER_STATUS)
                admin_op = await admin_ws.subscribe(ORDER_STATUS, {"orderId": second["id"]})
                await api.subscribed(2)
                (await api.move(admin, first["id"], "PAID", 1)).ok()
                assert await _events(user_ws, user_op, 1) == [(first["id"], 2)]

                redis_server.stop()
                await _during_the_outage(api, user, admin, first, second)
                await user_ws.expect_nothing(user_op, 0.5)

                redis_server.start()
                restarted = time.monotonic()
                assert await _events(user_ws, user_op, 3) == [
                    (first["id"], 3),
                    (second["id"], 2),
                    (second["id"], 3),
                ]
                assert await _events(admin_ws, admin_op, 2) == [
                    (second["id"], 2),
                    (second["id"], 3),
                ]
                assert time.monotonic() - restarted < 6
                # The relay and the replay both send them again: none gets through twice.
                await asyncio.sleep(2.5)
                await user_ws.expect_nothing(user_op, 0.1)
                await admin_ws.expect_nothing(admin_op, 0.1)
                # And the feed goes on as before.
                (await api.move(admin, first["id"], "DELIVERED", 3)).ok()
                assert await _events(user_ws, user_op, 1) == [(first["id"], 4)]


async def _during_the_outage(
    api: LiveClient, user: str, admin: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    """Queries and mutations keep answering while Redis is down."""
    started = time.monotonic()
    (await api.move(admin, first["id"], "SHIPPED", 2)).ok()
    (await api.move(admin, second["id"], "PAID", 1)).ok()
    (await api.move(admin, second["id"], "SHIPPED", 2)).ok()
    assert (await api.new_order(user))["status"] == "PENDING"
    order = (
        await api.execute(
            "query($id: ID!) { order(id: $id) { status } }", {"id": second["id"]}, token=user
        )
    ).ok()["order"]
    assert order == {"status": "SHIPPED"}
    assert time.monotonic() - started < 5
    assert (await api.http.get("/ready")).status_code == 200
