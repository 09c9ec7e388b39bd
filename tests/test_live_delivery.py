"""Subscriptions written to the sockets by the status feed (server/transport/live.py over
resolvers/subscriptions.py), against a server in this process, so that a test can publish
events of its own and count executions: one execution per event for each document and
variables, the same payloads and errors as the per-operation path, slow readers dropped,
duplicates dropped once, roles rechecked, both protocols."""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import strawberry
import uvicorn
from graphql import parse
from sqlalchemy import delete, update
from sqlmodel import col
from starlette.applications import Starlette

from models.tables import User
from resolvers import context as user_context
from resolvers.context import RequestContext, Services
from resolvers.events import ORDER_STATUS_CHANNEL, StatusEvent
from server.app import create_app
from server.assembly import build_schema
from server.transport import live
from server.transport.execution import FastExecutionContext
from tests.live_api import LiveClient, live_client
from tests.ws_client import LEGACY, PROTOCOLS, TRANSPORT, WSClient

pytestmark = pytest.mark.timeout(90)

EVENTS = "subscription S($o: ID) { orderStatusChanged(orderId: $o) { orderId status version } }"
ALIASED = "subscription { e: orderStatusChanged { id: orderId v: version } }"


@dataclass
class Served:
    url: str
    app: Starlette

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/graphql"

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def publish(self, raw: bytes) -> None:
        await self.services.broker.publish(ORDER_STATUS_CHANNEL, raw)

    async def subscribed(self, count: int) -> None:
        for _ in range(500):
            if self.services.broker.fanout.count() == count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{self.services.broker.fanout.count()} subscribers, not {count}")


@pytest.fixture
async def served(settings_factory: Any) -> AsyncIterator[Served]:
    """`order-service serve`'s uvicorn setup, in this process and event loop."""
    app = create_app(settings_factory(rate_limit_orders_per_minute=0))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Small kernel buffers, which accepted sockets inherit: a client that stops reading
    # fills them after a few dozen frames rather than megabytes.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    config = uvicorn.Config(
        app,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        log_config=None,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        assert not serving.done(), "the server did not start"
        await asyncio.sleep(0.01)
    served = Served(f"http://127.0.0.1:{listener.getsockname()[1]}", app)
    for _ in range(500):  # a Redis broker (TEST_REDIS_URL) must listen before we publish
        if getattr(served.services.broker, "listening", True):
            break
        await asyncio.sleep(0.01)
    try:
        yield served
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def api(served: Served, database_url: str) -> AsyncIterator[LiveClient]:
    async with live_client(served.url, database_url) as client:
        yield client


@pytest.fixture
def executions(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The roots of the shared executions, in order."""
    seen: list[Any] = []
    execute = live.execute_event

    def counting(executor: FastExecutionContext, root: Any) -> Any:
        seen.append(root)
        return execute(executor, root)

    monkeypatch.setattr(live, "execute_event", counting)
    return seen


def status_event(order_id: int, version: int, *, user_id: int = 1, status: str = "PAID") -> bytes:
    return StatusEvent(
        order_id=order_id,
        user_id=user_id,
        status=status,
        previous_status="PENDING",
        version=version,
        changed_at=datetime.now(UTC),
    ).encode()


async def events_of(ws: WSClient, op: str, n: int) -> list[tuple[str, int]]:
    got = []
    for _ in range(n):
        event = (await ws.next_data(op))["orderStatusChanged"]
        got.append((event["orderId"], event["version"]))
    return got


async def user_id_of(api: LiveClient, token: str) -> int:
    return int((await api.execute("{ me { id } }", token=token)).ok()["me"]["id"])


@pytest.mark.fast_paths  # counts the feed's shared executions or its tasks
async def test_one_execution_per_event_for_each_document_and_variables(
    served: Served, api: LiveClient, executions: list[Any]
) -> None:
    admin = await api.new_admin()
    mine = await api.new_order(admin)
    one, other = int(mine["id"]), int(mine["id"]) + 1000
    async with (
        WSClient.connect(served.ws_url, admin, protocol=TRANSPORT) as a,
        WSClient.connect(served.ws_url, admin, protocol=TRANSPORT) as b,
        WSClient.connect(served.ws_url, admin, protocol=LEGACY) as c,
    ):
        every = [await ws.subscribe(EVENTS, {"o": None}) for ws in (a, b, c)]
        aliased = await a.subscribe(ALIASED)
        only_one = await c.subscribe(EVENTS, {"o": mine["id"]})
        await served.subscribed(5)
        await served.publish(status_event(one, 2))
        await served.publish(status_event(other, 2))

        for ws, op in zip((a, b, c), every, strict=True):
            assert [await ws.next_data(op) for _ in range(2)] == [
                {"orderStatusChanged": {"orderId": str(one), "status": "PAID", "version": 2}},
                {"orderStatusChanged": {"orderId": str(other), "status": "PAID", "version": 2}},
            ]
        assert [await a.next_data(aliased) for _ in range(2)] == [
            {"e": {"id": str(one), "v": 2}},
            {"e": {"id": str(other), "v": 2}},
        ]
        assert await events_of(c, only_one, 1) == [(str(one), 2)]
        await c.expect_nothing(only_one, 0.3)
    # Three groups: every order (3 members, 2 protocols), aliased, one order (which the
    # other event never reached): 5 executions, where each member would have made 9.
    assert Counter(int(event.order_id) for event in executions) == {one: 3, other: 2}


@pytest.mark.fast_paths  # counts the feed's shared executions or its tasks
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_payloads_and_errors_are_those_of_the_per_operation_path(
    served: Served, api: LiveClient, executions: list[Any], protocol: str
) -> None:
    admin = await api.new_admin()
    query = "subscription { orderStatusChanged { orderId status version changedAt } }"
    # The per-operation path: Strawberry's own stream, as a server without websockets
    # (or a test) gets it from `schema.subscribe`.
    ctx = RequestContext(services=served.services, request_id="req-1")
    ctx.authenticate(f"Bearer {admin}")
    stream: AsyncGenerator[Any, None] = await build_schema(served.services.settings).subscribe(
        query, context_value=ctx
    )
    first = asyncio.ensure_future(anext(stream))
    headers = {"X-Request-ID": "req-1"}
    async with WSClient.connect(served.ws_url, admin, protocol=protocol, headers=headers) as ws:
        op = await ws.subscribe(query)
        await served.subscribed(2)
        await served.publish(status_event(7, 2))
        await served.publish(status_event(8, 2**40))  # no Int: an error in the payload
        await served.publish(status_event(9, 2, status="BOGUS"))  # fails: masked, and ends

        expected = [await first, await anext(stream), await anext(stream)]
        for result in expected:
            payload: dict[str, Any] = {"data": result.data}
            if result.errors:
                payload["errors"] = [e.formatted for e in result.errors]
            assert (await ws.receive(op)).payload == orjson.loads(orjson.dumps(payload))
        assert (await ws.receive(op)).type == "complete"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    last = expected[-1].errors[0]
    assert last.extensions == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-1"}
    assert expected[1].errors[0].extensions["code"]
    assert expected[1].data is None
    assert len(executions) == 2  # event 9 never got as far as an execution


@pytest.mark.fast_paths  # counts the feed's shared executions or its tasks
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_duplicates_are_dropped_once_for_the_process_and_late_versions_still_sent(
    served: Served, api: LiveClient, executions: list[Any], protocol: str
) -> None:
    admin = await api.new_admin()
    async with (
        WSClient.connect(served.ws_url, admin, protocol=protocol) as a,
        WSClient.connect(served.ws_url, admin, protocol=protocol) as b,
    ):
        ops = [await ws.subscribe(EVENTS) for ws in (a, b)]
        await served.subscribed(2)
        for raw in (
            status_event(7, 2),
            status_event(7, 2),  # a relay's second copy
            b"not json",
            status_event(7, 4),
            status_event(7, 3),  # late: its first publish failed, the relay sent it after 4
            status_event(8, 2),
            status_event(7, 3),  # and the relay's second copy of it
        ):
            await served.publish(raw)
        for ws, op in zip((a, b), ops, strict=True):
            assert await events_of(ws, op, 4) == [("7", 2), ("7", 4), ("7", 3), ("8", 2)]
            await ws.expect_nothing(op, 0.2)
    assert len(executions) == 4


class StalledClient:
    """A websocket client that subscribes, then stops reading: nothing but the small
    kernel buffers of the socket is between the server and it."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)
        self.buffer = b""

    async def subscribe(self, served: Served, token: str, query: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", served.port))
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        await loop.sock_sendall(
            self.sock,
            (
                f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {self.protocol}\r\n\r\n"
            ).encode(),
        )
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await loop.sock_recv(self.sock, 4096)
        self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]
        await self.send(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        )
        assert (await self.message())["type"] == "connection_ack"
        kind = "subscribe" if self.protocol == TRANSPORT else "start"
        await self.send({"type": kind, "id": "slow", "payload": {"query": query}})

    async def send(self, message: dict[str, Any]) -> None:
        payload = orjson.dumps(message)
        mask = os.urandom(4)
        size = len(payload)
        head = (
            bytes([0x81, 0x80 | size])
            if size < 126
            else bytes([0x81, 0xFE]) + size.to_bytes(2, "big")
        )
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, head + mask + masked)

    async def message(self) -> dict[str, Any]:
        """The next text message but keep-alives (reading again, at last)."""
        while (message := await self._message())["type"] == "ka":
            pass
        return message

    async def _message(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        while True:
            if len(self.buffer) >= 2:
                size, start = self.buffer[1] & 0x7F, 2
                if size == 126:
                    size, start = int.from_bytes(self.buffer[2:4], "big"), 4
                elif size == 127:
                    size, start = int.from_bytes(self.buffer[2:10], "big"), 10
                if len(self.buffer) >= start + size:
                    opcode = self.buffer[0] & 0x0F
                    frame, self.buffer = (
                        self.buffer[start : start + size],
                        self.buffer[start + size :],
                    )
                    if opcode == 0x1:
                        message: dict[str, Any] = orjson.loads(frame)
                        return message
                    continue
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 10)
            assert chunk, "the server closed the connection"
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_slow_reader_is_dropped_with_an_error_and_the_others_go_on(
    served: Served, api: LiveClient, protocol: str
) -> None:
    admin = await api.new_admin()
    # Big frames (about 1 KB each), so that the buffers fill in a few dozen events.
    wide = " ".join(f"t{i}: __typename" for i in range(28))
    query = f"subscription {{ orderStatusChanged {{ orderId version {wide} }} }}"
    stalled = StalledClient(protocol)
    try:
        async with WSClient.connect(served.ws_url, admin, protocol=TRANSPORT) as fast:
            op = await fast.subscribe(query)
            await stalled.subscribe(served, admin, query)
            await served.subscribed(2)
            sent = 0
            while served.services.broker.fanout.count() == 2:
                assert sent < 3000, "the stalled reader was never dropped"
                sent += 1
                await served.publish(status_event(1000 + sent, 2))
                assert (await fast.next_data(op))["orderStatusChanged"]["version"] == 2

            # What the slow reader got before it was dropped: the first events, in order,
            # then the error, then the end of the operation.
            got = []
            while (message := await stalled.message())["type"] in ("next", "data"):
                payload = message["payload"]
                if payload.get("errors"):
                    break
                got.append(int(payload["data"]["orderStatusChanged"]["orderId"]))
            assert message["type"] in ("next", "data"), message
            assert got == list(range(1001, 1001 + len(got)))
            assert len(got) < sent
            assert "faster than this subscription read them" in payload["errors"][0]["message"]
            assert (await stalled.message()) == {"type": "complete", "id": "slow"}
            # The others go on.
            await served.publish(status_event(5000, 2))
            assert (await fast.next_data(op))["orderStatusChanged"]["orderId"] == "5000"
    finally:
        stalled.close()


async def test_a_demoted_admin_stops_seeing_other_users_orders_and_a_deleted_one_is_ended(
    served: Served, api: LiveClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(user_context, "USER_RECHECK_SECONDS", 0.0)
    demoted, other = await api.new_admin(), await api.new_admin()
    demoted_id, user_id = (
        await user_id_of(api, demoted),
        await user_id_of(api, await api.new_user()),
    )
    async with (
        WSClient.connect(served.ws_url, demoted, protocol=TRANSPORT) as a,
        WSClient.connect(served.ws_url, demoted, protocol=LEGACY) as b,
        WSClient.connect(served.ws_url, other, protocol=TRANSPORT) as c,
    ):
        ops = [await ws.subscribe(EVENTS) for ws in (a, b, c)]
        await served.subscribed(3)
        await served.publish(status_event(7, 2, user_id=user_id))
        for ws, op in zip((a, b, c), ops, strict=True):
            assert await events_of(ws, op, 1) == [("7", 2)]

        async with served.services.db.transaction() as session:
            await session.execute(
                update(User).where(col(User.id) == demoted_id).values(role="USER")
            )
        # The tokens still say ADMIN; the database does not.
        await served.publish(status_event(7, 3, user_id=user_id))
        await served.publish(status_event(8, 2, user_id=demoted_id))
        for ws, op in zip((a, b), ops, strict=False):
            assert await events_of(ws, op, 1) == [("8", 2)]
        assert await events_of(c, ops[2], 2) == [("7", 3), ("8", 2)]

        async with served.services.db.transaction() as session:
            await session.execute(delete(User).where(col(User.id) == demoted_id))
        await served.publish(status_event(8, 3, user_id=demoted_id))
        for ws, op in zip((a, b), ops, strict=False):
            message = await ws.receive(op)
            errors = message.payload.get("errors") if message.type == "next" else message.payload
            assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert (await ws.receive(op)).type == "complete"
        assert await events_of(c, ops[2], 1) == [("8", 3)]
        await served.subscribed(1)


@pytest.mark.fast_paths  # counts the feed's shared executions or its tasks
@pytest.mark.parametrize(("protocol", "tasks_per_connection"), [(TRANSPORT, 1), (LEGACY, 2)])
async def test_an_idle_subscriber_costs_its_connection_task_and_no_other(
    served: Served, api: LiveClient, protocol: str, tasks_per_connection: int
) -> None:
    admin = await api.new_admin()
    before = _server_tasks()
    sockets = [await WSClient.connect(served.ws_url, admin, protocol=protocol) for _ in range(8)]
    try:
        for ws in sockets:
            await ws.subscribe(EVENTS)
        await served.subscribed(8)
        await asyncio.sleep(0.1)  # let every operation finish its setup
        added = [t for t in _server_tasks() if t not in before]
        # The connection's own (and the legacy protocol's keep-alive): no operation task,
        # no timer task.
        assert len(added) == 8 * tasks_per_connection, added
    finally:
        for ws in sockets:
            await ws.close()
    await served.subscribed(0)


def _server_tasks() -> set[asyncio.Task[Any]]:
    """The tasks of this process but those of the test's websocket clients."""
    return {
        t
        for t in asyncio.all_tasks()
        if "websockets/asyncio" not in getattr(t.get_coro(), "cr_code", None).co_filename  # type: ignore[union-attr]
    }


@strawberry.type
class _Thing:
    a: int

    @strawberry.field
    def b(self) -> int:
        return 1


@strawberry.type
class _Query:
    x: int = 1


@strawberry.type
class _Subscription:
    @strawberry.subscription
    async def things(self) -> AsyncGenerator[_Thing, None]:
        yield _Thing(a=1)


def _plain(document: str) -> bool:
    schema = strawberry.Schema(
        query=_Query, subscription=_Subscription, execution_context_class=FastExecutionContext
    )
    executor = FastExecutionContext.build(schema._schema, parse(document))
    assert isinstance(executor, FastExecutionContext)
    return live.plain_subscription(executor)


@pytest.mark.parametrize(
    ("document", "shared"),
    [
        ("subscription { things { a } }", True),
        ("subscription { things { __typename x: a } }", True),
        ("subscription { things { ...F } } fragment F on _Thing { a }", True),
        ("subscription { things { a b } }", False),  # a resolver of its own
    ],
)
def test_only_selections_of_plain_fields_are_shared(document: str, shared: bool) -> None:
    assert _plain(document) is shared
