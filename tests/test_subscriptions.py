"""orderStatusChanged over real websockets, on both protocols, against one live server.

The server (and its database) is shared by the tests of this module; every test makes
its own users and orders, so none sees another's events.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from sqlalchemy.engine import make_url

from infra.security import create_access_token, sign_webhook
from tests.conftest import REDIS_URL, USE_PG
from tests.live import LiveServer, live_server
from tests.live_api import LiveClient, live_client
from tests.ws_client import LEGACY, ORDER_STATUS, PROTOCOLS, TRANSPORT, Refused, WSClient

SECRET_KEY = "subscription-tests-secret-key-0123456789"
WEBHOOK_SECRET = "subscription-tests-webhook-secret-0123456789"
MAX_SUBSCRIPTIONS = 3
MAX_CONNECTIONS = 3

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def module_database(migrated_database: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    if USE_PG:
        # This module's tests never truncate it: the server may keep it for the module.
        return migrated_database
    template = Path(make_url(migrated_database).database or "")
    target = tmp_path_factory.mktemp("subscriptions") / "orders.db"
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture(scope="module")
def server(module_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "DATABASE_URL": module_database,
        "SECRET_KEY": SECRET_KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION": str(MAX_SUBSCRIPTIONS),
        "WS_MAX_CONNECTIONS_PER_USER": str(MAX_CONNECTIONS),
        "WS_KEEPALIVE_SECONDS": "0.5",
        "RATE_LIMIT_ORDERS_PER_MINUTE": "0",
    }
    if REDIS_URL:
        env |= {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}:"}
    with live_server(env, tmp_path_factory.mktemp("server")) as live:
        yield live


@pytest.fixture
async def api(server: LiveServer, module_database: str) -> Any:
    async with live_client(server.url, module_database) as client:
        yield client


def event(order: dict[str, Any], status: str, previous: str, version: int) -> dict[str, Any]:
    return {
        "orderId": order["id"],
        "status": status,
        "previousStatus": previous,
        "version": version,
    }


async def next_event(ws: WSClient, op: str) -> dict[str, Any]:
    data = await ws.next_data(op)
    payload: dict[str, Any] = data["orderStatusChanged"]
    assert payload.pop("changedAt")
    return payload


async def expect_error(ws: WSClient, op: str) -> dict[str, Any]:
    message = await ws.receive(op)
    errors = message.payload if message.type == "error" else message.payload.get("errors")
    assert errors, message
    error: dict[str, Any] = errors[0]
    return error


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_owner_sees_an_admins_status_change(
    server: LiveServer, api: LiveClient, protocol: str
) -> None:
    user, admin = await api.new_user(), await api.new_admin()
    order = await api.new_order(user)
    async with WSClient.connect(server.ws_url, user, protocol=protocol) as ws:
        one = await ws.subscribe(ORDER_STATUS, {"orderId": order["id"]})
        every = await ws.subscribe(ORDER_STATUS, {"orderId": None})
        await api.subscribed(2)
        (await api.move(admin, order["id"], "PAID", 1)).ok()
        assert await next_event(ws, one) == event(order, "PAID", "PENDING", 2)
        assert await next_event(ws, every) == event(order, "PAID", "PENDING", 2)
        (await api.move(admin, order["id"], "SHIPPED", 2)).ok()
        assert await next_event(ws, one) == event(order, "SHIPPED", "PAID", 3)
        assert await next_event(ws, every) == event(order, "SHIPPED", "PAID", 3)
        await ws.expect_nothing(one, 0.3)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_all_orders_means_own_orders_for_a_user_and_every_order_for_an_admin(
    server: LiveServer, api: LiveClient, protocol: str
) -> None:
    alice, bob, admin = await api.new_user(), await api.new_user(), await api.new_admin()
    alices, bobs = await api.new_order(alice), await api.new_order(bob)
    async with (
        WSClient.connect(server.ws_url, alice, protocol=protocol) as alice_ws,
        WSClient.connect(server.ws_url, bob, protocol=protocol) as bob_ws,
        WSClient.connect(server.ws_url, admin, protocol=protocol) as admin_ws,
    ):
        ops = [await ws.subscribe(ORDER_STATUS, {"orderId": None}) for ws in (alice_ws, bob_ws)]
        admin_op = await admin_ws.subscribe(ORDER_STATUS)
        await api.subscribed(3)
        (await api.move(admin, alices["id"], "PAID", 1)).ok()
        (await api.move(admin, bobs["id"], "CANCELLED", 1)).ok()
        (await api.move(admin, alices["id"], "SHIPPED", 2)).ok()

        assert await next_event(alice_ws, ops[0]) == event(alices, "PAID", "PENDING", 2)
        assert await next_event(alice_ws, ops[0]) == event(alices, "SHIPPED", "PAID", 3)
        assert await next_event(bob_ws, ops[1]) == event(bobs, "CANCELLED", "PENDING", 2)
        assert [await next_event(admin_ws, admin_op) for _ in range(3)] == [
            event(alices, "PAID", "PENDING", 2),
            event(bobs, "CANCELLED", "PENDING", 2),
            event(alices, "SHIPPED", "PAID", 3),
        ]
        await alice_ws.expect_nothing(ops[0], 0.3)
        await bob_ws.expect_nothing(ops[1], 0.1)
        await admin_ws.expect_nothing(admin_op, 0.1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_failed_updates_publish_nothing(
    server: LiveServer, api: LiveClient, protocol: str
) -> None:
    user, admin = await api.new_user(), await api.new_admin()
    order = await api.new_order(user)
    async with WSClient.connect(server.ws_url, admin, protocol=protocol) as ws:
        op = await ws.subscribe(ORDER_STATUS, {"orderId": order["id"]})
        await api.subscribed(1)
        assert (await api.move(admin, order["id"], "PAID", 7)).code == "VERSION_CONFLICT"
        assert (await api.move(admin, order["id"], "DELIVERED", 1)).code == "INVALID_TRANSITION"
        assert (await api.move(user, order["id"], "PAID", 1)).code == "FORBIDDEN"
        await ws.expect_nothing(op, 0.5)
        (await api.move(admin, order["id"], "CANCELLED", 1)).ok()
        # The first event is the one real change: nothing was queued before it.
        assert await next_event(ws, op) == event(order, "CANCELLED", "PENDING", 2)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_someone_elses_order_is_not_found(
    server: LiveServer, api: LiveClient, protocol: str
) -> None:
    alice, bob, admin = await api.new_user(), await api.new_user(), await api.new_admin()
    alices = await api.new_order(alice)
    async with WSClient.connect(server.ws_url, bob, protocol=protocol) as ws:
        for order_id in (alices["id"], "999999999", "not-an-id"):
            op = await ws.subscribe(ORDER_STATUS, {"orderId": order_id})
            error = await expect_error(ws, op)
            assert error["extensions"]["code"] == "NOT_FOUND"
            assert "999999999" not in error["message"]
            assert (await ws.receive(op)).type == "complete"
        # Bob's connection goes on working, and sees nothing of Alice's order.
        mine = await ws.subscribe(ORDER_STATUS)
        await api.subscribed(1)
        (await api.move(admin, alices["id"], "PAID", 1)).ok()
        await ws.expect_nothing(mine, 0.5)
    async with WSClient.connect(server.ws_url, admin, protocol=protocol) as ws:
        op = await ws.subscribe(ORDER_STATUS, {"orderId": alices["id"]})
        await api.subscribed(1)
        (await api.move(admin, alices["id"], "SHIPPED", 2)).ok()
        assert await next_event(ws, op) == event(alices, "SHIPPED", "PAID", 3)


def _token(user_id: int, *, secret: str = SECRET_KEY, age_seconds: float = 0) -> str:
    return create_access_token(
        user_id, "ADMIN", secret=secret, expires_minutes=1, now=time.time() - age_seconds
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_bad_tokens_are_refused_with_4403(
    server: LiveServer, api: LiveClient, protocol: str
) -> None:
    user = await api.new_user()
    user_id = int((await api.execute("{ me { id } }", token=user)).ok()["me"]["id"])
    claims = {"sub": str(user_id), "role": "ADMIN", "iat": int(time.time())}
    forged = _token(user_id, secret="another-secret-0123456789abcdefghijklmnop")
    unsigned = jwt.encode({**claims, "exp": int(time.time()) + 60}, key="", algorithm="none")
    refused: list[dict[str, Any]] = [
        {},
        {"authorization": "Bearer "},
        {"authorization": "Bearer not-a-jwt"},
        {"authorization": user},  # no scheme
        {"authorization": f"Basic {user}"},
        {"authorization": f"Bearer {forged}"},
        {"authorization": f"Bearer {_token(user_id, age_seconds=120)}"},  # expired
        {"authorization": f"Bearer {unsigned}"},
        {"authorization": f"Bearer {_token(987654321)}"},  # no such user
        {"token": user},
    ]
    for payload in refused:
        with pytest.raises(Refused) as refusal:
            await WSClient.connect(server.ws_url, None, protocol=protocol, payload=payload)
        assert refusal.value.code == 4403, payload
        if protocol == LEGACY:
            assert [m["type"] for m in refusal.value.messages] == ["connection_error"]
    for key in ("authorization", "Authorization", "AUTHORIZATION"):
        ws = await WSClient.connect(
            server.ws_url, None, protocol=protocol, payload={key: f"Bearer {user}"}
        )
        await ws.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_socket_is_closed_when_its_token_expires(
    server: LiveServer, api: LiveClient, protocol: str
) -> None:
    user = await api.new_user()
    user_id = int((await api.execute("{ me { id } }", token=user)).ok()["me"]["id"])
    short_lived = _token(user_id, age_seconds=57)  # expires in 2 to 3 s
    async with WSClient.connect(server.ws_url, short_lived, protocol=protocol) as ws:
        await ws.subscribe(ORDER_STATUS)
        started = time.monotonic()
        closed = await ws.wait_closed(timeout=10)
    assert closed.code == 4401
    assert time.monotonic() - started < 6


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscription_and_connection_limits(
    server: LiveServer, api: LiveClient, protocol: str
) -> None:
    user = await api.new_user()
    sockets = [await WSClient.connect(server.ws_url, user, protocol=protocol)]
    try:
        ws = sockets[0]
        ops = [await ws.subscribe(ORDER_STATUS) for _ in range(MAX_SUBSCRIPTIONS)]
        extra = await ws.subscribe(ORDER_STATUS)
        assert "limit" in (await expect_error(ws, extra))["message"].lower()
        # Ending one subscription makes room for another.
        await ws.complete(ops[0])
        if protocol == LEGACY:  # graphql-transport-ws does not answer a client's complete
            assert (await ws.receive(ops[0])).type == "complete"
        again = await ws.subscribe(ORDER_STATUS)
        await ws.expect_nothing(again, 0.3)

        while len(sockets) < MAX_CONNECTIONS:
            sockets.append(await WSClient.connect(server.ws_url, user, protocol=protocol))
        with pytest.raises(Refused) as refusal:
            await WSClient.connect(server.ws_url, user, protocol=protocol)
        assert refusal.value.code == 4429
        # Another user is not affected; a closed connection frees its place.
        await (await WSClient.connect(server.ws_url, await api.new_user())).close()
        await sockets.pop().close()
        await _connect_soon(server, user, protocol)
    finally:
        for socket in sockets:
            await socket.close()


async def _connect_soon(server: LiveServer, token: str, protocol: str) -> None:
    for _ in range(50):
        try:
            await (await WSClient.connect(server.ws_url, token, protocol=protocol)).close()
            return
        except Refused:
            await asyncio.sleep(0.1)
    raise AssertionError("the connection's place was never freed")


async def test_keep_alive_on_both_protocols(server: LiveServer, api: LiveClient) -> None:
    user = await api.new_user()
    async with WSClient.connect(server.ws_url, user, protocol=LEGACY) as legacy:
        await legacy.expect_nothing("-", 1.3)  # keep-alives come every 0.5 s here
        assert sum(m["type"] == "ka" for m in legacy.control) >= 2
    async with WSClient.connect(server.ws_url, user, protocol=TRANSPORT) as transport:
        await transport.ping()
        await transport.expect_nothing("-", 0.5)
        assert {"type": "pong"} in transport.control


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_paid_webhook_reaches_the_owner_once(
    server: LiveServer, api: LiveClient, protocol: str
) -> None:
    user = await api.new_user()
    order = await api.new_order(user)
    payment = (
        await api.execute(
            "mutation($i: InitiatePaymentInput!) { initiatePayment(input: $i) { id } }",
            {"i": {"orderId": order["id"]}},
            token=user,
        )
    ).ok()["initiatePayment"]
    body = orjson.dumps({"payment_id": payment["id"], "order_id": order["id"], "status": "SUCCESS"})
    headers = {
        "X-Signature": sign_webhook(body, WEBHOOK_SECRET.encode()),
        "Content-Type": "application/json",
    }
    async with WSClient.connect(server.ws_url, user, protocol=protocol) as ws:
        op = await ws.subscribe(ORDER_STATUS, {"orderId": order["id"]})
        await api.subscribed(1)
        for _ in range(2):  # the replay changes nothing and publishes nothing
            response = await api.http.post("/payments/webhook", content=body, headers=headers)
            assert response.status_code == 200, response.text
        assert await next_event(ws, op) == event(order, "PAID", "PENDING", 2)
        await ws.expect_nothing(op, 0.5)
