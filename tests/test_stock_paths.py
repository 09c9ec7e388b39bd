"""FAST_PATHS=on and off give the same bytes: the custom view, executor, document caches
and subscription feed against Strawberry's own view, executor, `ParserCache` /
`ValidationCache` and websocket handlers, side by side on one database.

Each request goes to an app of either mode with the same request id, and the status,
content type and body must be equal byte for byte; websocket frames likewise.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from resolvers.context import Services
from resolvers.events import ORDER_STATUS_CHANNEL, StatusEvent
from server.transport.execution import FastExecutionContext
from server.transport.view import GraphQLView, StockGraphQLView
from tests.client import ORDER_FIELDS, GraphQLClient
from tests.ws_client import PROTOCOLS, TRANSPORT, Refused, WSClient

pytestmark = pytest.mark.timeout(90)

HEADERS = {"X-Request-ID": "req-stock-1", "Content-Type": "application/json"}
MakeClient = Callable[..., Awaitable[GraphQLClient]]


def _mode_settings(fast: bool, **overrides: Any) -> dict[str, Any]:
    # Each app its own Redis prefix: with TEST_REDIS_URL neither may see the other's
    # cached answers, limits or events.
    return {
        "fast_paths": fast,
        "redis_key_prefix": f"test-{uuid.uuid4().hex[:12]}-{'fast' if fast else 'stock'}:",
        "rate_limit_orders_per_minute": 0,
        **overrides,
    }


async def _pair(client_factory: MakeClient, **overrides: Any) -> tuple[GraphQLClient, ...]:
    fast = await client_factory(**_mode_settings(True, **overrides))
    stock = await client_factory(**_mode_settings(False, **overrides))
    return fast, stock


async def _post(client: GraphQLClient, body: Any, token: str | None = None, **headers: str) -> Any:
    hdrs = {**HEADERS, **headers}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await client.http.post("/graphql", content=content, headers=hdrs)
    return response.status_code, response.headers.get("content-type"), response.content


async def _same(pair: tuple[GraphQLClient, ...], body: Any, token: str | None = None) -> bytes:
    fast, stock = pair
    answers = [await _post(fast, body, token), await _post(stock, body, token)]
    assert answers[0] == answers[1], body
    content: bytes = answers[0][2]
    return content


def test_the_switch_picks_the_view_and_its_handlers(settings_factory: Any) -> None:
    from server.app import create_app

    def view_of(app: Starlette) -> Any:
        return next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/graphql")

    fast = view_of(create_app(settings_factory(fast_paths=True)))
    stock = view_of(create_app(settings_factory(fast_paths=False)))
    assert type(fast) is GraphQLView and type(stock) is StockGraphQLView
    assert stock.graphql_transport_ws_handler_class.__name__ == "TransportWSHandler"
    assert stock.graphql_ws_handler_class.__name__ == "LegacyWSHandler"
    assert stock.schema.execution_context_class is StrawberryGraphQLCoreExecutionContext
    assert fast.schema.execution_context_class is FastExecutionContext


async def _orders(client: GraphQLClient) -> tuple[str, str]:
    """An admin and a user with three orders (several lines, one paid for, one shipped)."""
    admin = await client.make_admin("admin@example.com")
    user = await client.signup("user@example.com")
    for n, items in enumerate(
        [[("WIDGET-001", 2), ("GADGET-002", 1)], [("GADGET-002", 3)], [("WIDGET-001", 1)]]
    ):
        order = (await client.create_order(user, f"t-{n}", items)).ok()["createOrder"]
        if n == 1:
            await client.execute(
                "mutation($i: InitiatePaymentInput!) { initiatePayment(input: $i) { id } }",
                {"i": {"orderId": order["id"]}},
                user,
            )
        if n == 2:
            (await client.move(admin, order["id"], "CANCELLED", order["version"])).ok()
    return admin, user


READS: list[tuple[str, dict[str, Any] | None]] = [
    (f"{{ orders {{ total page limit pages items {{ {ORDER_FIELDS} }} }} }}", None),
    (
        "query Page($s: OrderStatus, $q: String) { orders(status: $s, q: $q, limit: 2) "
        "{ total items { id status amountCents } } }",
        {"s": "PENDING", "q": "WIDGET"},
    ),
    (
        "fragment O on Order { id ...L payment { ... on Payment { status amountCents } } }"
        " fragment L on Order { items { sku qty } }"
        " query { a: orders(page: 2, limit: 1) { items { ...O __typename } } b: __typename }",
        None,
    ),
    (
        "query($x: Boolean!) { orders { items { id items @include(if: $x) { sku } "
        "user @skip(if: $x) { email } } } }",
        {"x": True},
    ),
    (
        "query($id: ID!) { order(id: $id) { id user { email role } payment { status } } }",
        {"id": "2"},
    ),
    ("query($id: ID!) { order(id: $id) { id } }", {"id": "999"}),
    ("query($id: ID!) { order(id: $id) { id } }", {"id": "not-a-number"}),
    ("{ me { id email role } products { sku name priceCents } }", None),
    ("{ orders(limit: 1000) { total } }", None),
    # Errors: validation, parsing, limits, variables.
    ("{ orders { nope } }", None),
    ("{ orders { ", None),
    ("{ orders { items { user { id } } } " + "x: __typename " * 40 + "}", None),
    ("{ " + " ".join(["__typename"] * 5000) + " }", None),
    ("{ __schema { types { fields { type { " + "ofType { " * 14 + "name" + " }" * 19, None),
    ("query($s: OrderStatus) { orders(status: $s) { total } }", {"s": "BOGUS"}),
    ("query($p: Int!) { orders(page: $p) { total } }", None),
    ("subscription { orderStatusChanged { orderId } }", None),
    ("query A { me { id } } query B { products { sku } }", None),
]


@pytest.mark.parametrize("who", ["user", "admin", "anonymous"])
async def test_reads_and_errors_are_the_same_bytes(client_factory: MakeClient, who: str) -> None:
    pair = await _pair(client_factory, cache_ttl_seconds=0)
    admin, user = await _orders(pair[0])
    token = {"user": user, "admin": admin, "anonymous": None}[who]
    for query, variables in READS:
        await _same(pair, {"query": query, "variables": variables}, token)
    await _same(pair, {"query": READS[-1][0], "operationName": "B"}, token)


async def test_requests_strawberry_refuses_are_refused_alike(client_factory: MakeClient) -> None:
    pair = await _pair(client_factory)
    for body in (
        b"{not json",
        b'"a string"',
        b"[]",
        {"query": 1},
        {"query": "{ __typename }", "variables": []},
        {"query": "{ __typename }", "operationName": 3},
        {"query": "{ __typename }", "extensions": "x"},
        {"variables": {}},
        [{"query": "{ __typename }"}],
        {"query": "{ products { sku } }", "variables": {"x": list(range(1001))}},
        {"query": "{ __typename }" + " " * 100_001},
    ):
        await _same(pair, body)
    fast, stock = pair
    for method in ("get", "put"):
        answers = [await getattr(c.http, method)("/graphql", headers=HEADERS) for c in pair]
        assert [(r.status_code, r.content) for r in answers] == [
            (answers[0].status_code, answers[0].content)
        ] * 2
    form = [
        await c.http.post(
            "/graphql", data={"query": "{ __typename }"}, headers={"X-Request-ID": "r"}
        )
        for c in (fast, stock)
    ]
    assert form[0].status_code == form[1].status_code and form[0].content == form[1].content


async def test_cached_reads_are_the_same_bytes_on_a_miss_and_a_hit(
    client_factory: MakeClient,
) -> None:
    pair = await _pair(client_factory, cache_ttl_seconds=30)
    admin, user = await _orders(pair[0])
    query = {"query": f"{{ orders {{ total items {{ {ORDER_FIELDS} }} }} }}"}
    for token in (user, admin):
        miss = await _same(pair, query, token)
        hit = await _same(pair, query, token)
        assert miss == hit
    for c in pair:
        text = (await c.http.get("/metrics")).text
        assert 'cache_requests_total{result="hit"} 2.0' in text, text


async def test_mutations_and_their_errors_are_the_same_bytes(client_factory: MakeClient) -> None:
    pair = await _pair(client_factory, cache_ttl_seconds=0)
    fast, stock = pair
    admin, user = await _orders(fast)
    create = (
        "mutation($i: CreateOrderInput!) { createOrder(input: $i) "
        "{ status version amountCents clientToken items { sku qty unitPriceCents lineTotalCents }"
        " user { email } payment { id } } }"
    )
    # The same new order through either app (each its own client token).
    made = []
    for client, token in ((fast, "twin-f"), (stock, "twin-s")):
        body = {
            "query": create.replace("clientToken ", ""),
            "variables": {"i": {"items": [{"sku": "WIDGET-001", "qty": 2}], "clientToken": token}},
        }
        made.append(await _post(client, body, user))
    assert made[0] == made[1]
    # A replay answers the original order, id and timestamps included.
    replay = {
        "query": f"mutation($i: CreateOrderInput!) {{ createOrder(input: $i) {{ {ORDER_FIELDS} }} }}",
        "variables": {"i": {"items": [{"sku": "WIDGET-001", "qty": 2}], "clientToken": "twin-f"}},
    }
    await _same(pair, replay, user)
    moves = [
        # Not an admin, a stale version, an illegal transition, a missing order.
        ({"id": "1", "status": "SHIPPED", "version": 1}, user),
        ({"id": "1", "status": "PAID", "version": 7}, admin),
        ({"id": "3", "status": "PAID", "version": 2}, admin),
        ({"id": "999", "status": "PAID", "version": 1}, admin),
    ]
    for move, token in moves:
        body = {
            "query": "mutation($i: UpdateOrderStatusInput!) { updateOrderStatus(input: $i) { id } }",
            "variables": {"i": move},
        }
        await _same(pair, body, token)
    for items in ([{"sku": "NOPE", "qty": 1}], [{"sku": "WIDGET-001", "qty": 0}], []):
        body = {"query": create, "variables": {"i": {"items": items, "clientToken": "bad"}}}
        await _same(pair, body, user)
    await _same(pair, {"query": create, "variables": {"i": {"items": [], "clientToken": "x"}}})
    signup = "mutation($i: SignupInput!) { signup(input: $i) { tokenType role } }"
    for email in ("user@example.com", "not-an-email"):
        await _same(pair, {"query": signup, "variables": {"i": {"email": email, "password": "pw"}}})


@asynccontextmanager
async def _served(app: Starlette) -> AsyncIterator[str]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    config = uvicorn.Config(
        app, ws="websockets-sansio", ws_ping_interval=None, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        assert not serving.done(), "the server did not start"
        await asyncio.sleep(0.01)
    services: Services = app.state.services
    for _ in range(500):  # a Redis broker must listen before anything is published
        if getattr(services.broker, "listening", True):
            break
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{listener.getsockname()[1]}/graphql"
    finally:
        server.should_exit = True
        await serving


async def _subscribed(app: Starlette, count: int) -> None:
    services: Services = app.state.services
    for _ in range(500):
        if services.broker.fanout.count() == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{services.broker.fanout.count()} subscribers, not {count}")


def _event(order_id: int, version: int, status: str = "PAID") -> bytes:
    return StatusEvent(
        order_id=order_id,
        user_id=1,
        status=status,
        previous_status="PENDING",
        version=version,
        changed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    ).encode()


async def _frames(ws: WSClient, n: int) -> list[str]:
    frames: list[str] = []
    while len(frames) < n:
        raw = await asyncio.wait_for(ws.ws.recv(), 10)
        assert isinstance(raw, str)
        if orjson.loads(raw).get("type") not in ("ka", "ping", "pong"):
            frames.append(raw)
    return frames


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscription_frames_are_the_same_bytes(settings_factory: Any, protocol: str) -> None:
    from server.app import create_app

    apps = [create_app(settings_factory(**_mode_settings(fast))) for fast in (True, False)]
    async with _served(apps[0]) as fast_url, _served(apps[1]) as stock_url:
        transport = httpx.ASGITransport(app=apps[0])
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            admin = await GraphQLClient(http, apps[0]).make_admin("admin@example.com")
        headers = {"X-Request-ID": "req-ws-1"}
        documents = [
            (
                "subscription { orderStatusChanged { orderId status previousStatus version "
                "changedAt __typename } }",
                {},
            ),
            (
                "subscription S($o: ID) { e: orderStatusChanged(orderId: $o) { id: orderId v: version } }",
                {"o": None},
            ),
        ]
        received: list[list[str]] = []
        for app, url in zip(apps, (fast_url, stock_url), strict=True):
            async with WSClient.connect(url, admin, protocol=protocol, headers=headers) as ws:
                for n, (document, variables) in enumerate(documents, start=1):
                    await ws.subscribe(document, variables, op_id=f"op-{n}")
                await _subscribed(app, len(documents))
                services: Services = app.state.services
                for raw in (
                    _event(7, 2),
                    _event(8, 2**40),  # no Int: an error in the payload
                    _event(7, 3),
                    _event(9, 2, status="BOGUS"),  # fails: masked, and ends
                ):
                    await services.broker.publish(ORDER_STATUS_CHANNEL, raw)
                # Each: 7, 8 (an error in the payload), 7, then the masked error and
                # the end of the stream.
                frames = await _frames(ws, 10)
                received.append(sorted(frames))
                # Errors before the stream starts: a document that does not validate.
                await ws.subscribe("subscription { orderStatusChanged { nope } }", op_id="bad")
                received.append(await _frames(ws, 1))
        assert received[0] == received[2]
        assert received[1] == received[3]
        assert any('"errors"' in f and "INTERNAL_SERVER_ERROR" in f for f in received[0])

        for url in (fast_url, stock_url):
            with pytest.raises(Refused) as refused:
                await WSClient.connect(url, "not-a-token", protocol=protocol)
            assert refused.value.code == 4403


async def test_transport_frames_for_a_forbidden_order_are_the_same(settings_factory: Any) -> None:
    from server.app import create_app

    apps = [create_app(settings_factory(**_mode_settings(fast))) for fast in (True, False)]
    async with _served(apps[0]) as fast_url, _served(apps[1]) as stock_url:
        transport = httpx.ASGITransport(app=apps[0])
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            client = GraphQLClient(http, apps[0])
            admin, user = await _orders(client)
            other = await client.signup("other@example.com")
        answers = []
        for url in (fast_url, stock_url):
            async with WSClient.connect(
                url, other, protocol=TRANSPORT, headers={"X-Request-ID": "req-ws-2"}
            ) as ws:
                await ws.subscribe(
                    'subscription { orderStatusChanged(orderId: "1") { orderId } }', op_id="x"
                )
                answers.append(await _frames(ws, 1))
        assert answers[0] == answers[1]
        assert admin and user


async def test_the_stock_app_never_enters_a_fast_path(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FAST_PATHS=off, every fast path raising does not change an answer: none runs."""
    from schema import selection
    from server.app import create_app
    from server.transport import documents, live

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a fast path ran with FAST_PATHS=off")

    monkeypatch.setattr(FastExecutionContext, "__init__", refuse)
    monkeypatch.setattr(documents.DocumentRules, "on_parse", refuse)
    monkeypatch.setattr(documents.DocumentRules, "on_validate", refuse)
    monkeypatch.setattr(live.Groups, "join", refuse)
    monkeypatch.setattr(live.Feed, "join", refuse)
    monkeypatch.setattr(live, "send_now", refuse)
    monkeypatch.setattr(selection, "_include", refuse)
    monkeypatch.setattr(GraphQLView, "_cached_response", refuse)

    app = create_app(settings_factory(**_mode_settings(False, cache_ttl_seconds=30)))
    async with _served(app) as url:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            client = GraphQLClient(http, app)
            admin, user = await _orders(client)
            query = f"{{ orders {{ total items {{ {ORDER_FIELDS} }} }} }}"
            for _ in range(2):  # a miss, then a hit
                page = (await client.execute(query, token=user)).ok()["orders"]
                assert page["total"] == 3 and page["items"][0]["items"]
                assert page["items"][0]["user"]["email"] == "user@example.com"
        async with WSClient.connect(url, admin, protocol=TRANSPORT) as ws:
            op = await ws.subscribe("subscription { orderStatusChanged { orderId version } }")
            await _subscribed(app, 1)
            await app.state.services.broker.publish(ORDER_STATUS_CHANNEL, _event(1, 5))
            assert await ws.next_data(op) == {"orderStatusChanged": {"orderId": "1", "version": 5}}
