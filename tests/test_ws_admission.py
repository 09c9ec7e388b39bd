"""Websocket admission (server/ws_admission.py), over real sockets to `serve`'s uvicorn
setup in this process: a socket that is not acknowledged in time is closed with 4408 on
both protocols, whichever handlers serve it; sockets not acknowledged yet are capped per
client address and per instance (HTTP 429 before the upgrade); the gauges and the
refusals are in /metrics."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from infra.metrics import Metrics
from infra.settings import Settings
from resolvers.context import RequestContext
from server.app import create_app
from server.ws_admission import WebsocketAdmission
from tests.live_api import LiveClient, live_client
from tests.ws_client import LEGACY, PROTOCOLS, TRANSPORT, Refused, WSClient

pytestmark = pytest.mark.timeout(90)

TIMEOUT = (4408, "Connection initialisation timeout")


class Served:
    def __init__(self, url: str, app: Starlette, api: LiveClient) -> None:
        self.url = url
        self.ws_url = url.replace("http://", "ws://") + "/graphql"
        self.app = app
        self.api = api

    async def metric(self, name: str, labels: str = "") -> float:
        text = (await self.api.http.get("/metrics")).text
        key = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(key + " "):
                return float(line.split()[1])
        raise AssertionError(f"no {key} in /metrics")

    async def settled(self, name: str, value: float, labels: str = "") -> float:
        """The metric once it equals `value`, or as it is after a few seconds."""
        for _ in range(100):
            seen = await self.metric(name, labels)
            if seen == value:
                return seen
            await asyncio.sleep(0.05)
        return seen

    async def silent(
        self, protocol: str = TRANSPORT, address: str | None = None
    ) -> ClientConnection:
        """A socket that never sends connection_init (from `address`, as our proxy says)."""
        headers = {"X-Forwarded-For": address} if address else None
        return await connect(
            self.ws_url,
            subprotocols=[protocol],  # type: ignore[list-item]
            additional_headers=headers,
            open_timeout=10,
        )


Serve = Callable[..., Any]


@pytest.fixture
async def serve(settings_factory: Any, database_url: str) -> AsyncIterator[Serve]:
    """`serve(**settings)`: the app on uvicorn as `order-service serve` runs it."""
    stack: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    @asynccontextmanager
    async def start(stock_handlers: bool = False, **overrides: Any) -> AsyncIterator[Served]:
        settings: Settings = settings_factory(**overrides)
        app = create_app(settings)
        if stock_handlers:
            view: Any = _admission(app).app
            view.graphql_transport_ws_handler_class = BaseGraphQLTransportWSHandler
            view.graphql_ws_handler_class = BaseGraphQLWSHandler
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(256)
        config = uvicorn.Config(
            app,
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            ws_ping_interval=None,
            proxy_headers=True,
            forwarded_allow_ips=settings.trusted_proxies,
            log_config=None,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        stack.append((server, serving))
        while not server.started:
            assert not serving.done(), "the server did not start"
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with live_client(url, database_url) as api:
            yield Served(url, app, api)

    yield start
    for server, serving in stack:
        server.should_exit = True
        await serving


def _admission(app: Starlette) -> WebsocketAdmission:
    for route in app.routes:
        if isinstance(route, WebSocketRoute) and route.path == "/graphql":
            assert isinstance(route.endpoint, WebsocketAdmission)
            return route.endpoint
    raise AssertionError("no websocket route")


async def _closed(ws: ClientConnection, timeout: float = 15) -> tuple[int, str]:
    """(code, reason) of the server's close, reading until it comes."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, f"closed without a close frame: {exc}"
        return exc.rcvd.code, exc.rcvd.reason
    except TimeoutError:
        await ws.close()
        raise AssertionError(f"still open after {timeout} s") from None


async def _refused(served: Served, address: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refused:
        await served.silent(address=address)
    return refused.value


@pytest.mark.parametrize("stock_handlers", [False, True], ids=["ours", "strawberry"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_silent_socket_is_closed_with_4408(
    serve: Serve, protocol: str, stock_handlers: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(ws_init_timeout_seconds=1, stock_handlers=stock_handlers) as served:
        started = time.monotonic()
        ws = await served.silent(protocol)
        assert await served.settled("graphql_ws_connections_pending", 1) == 1
        assert await _closed(ws) == TIMEOUT
        assert time.monotonic() - started >= 0.9  # not before its time
        refused = await served.metric("graphql_ws_refused_total", 'reason="init_timeout"')
        assert refused == 1
        assert await served.settled("graphql_ws_connections_pending", 0) == 0
        assert await served.settled("graphql_ws_connections", 0) == 0
    # Closed by the guard while the handler still waited: nothing for the logs.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_acknowledgement_after_the_deadline_is_too_late(
    serve: Serve,
    protocol: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The deadline is for the acknowledgement: a connection_init whose check outlasts it
    is closed with 4408 all the same, and leaves nothing counted (the user's slot too)."""
    async with serve(ws_init_timeout_seconds=0.5, ws_max_connections_per_user=1) as served:
        token = await served.api.new_user()
        looked_up = RequestContext.current_user

        async def slow(self: RequestContext) -> Any:
            await asyncio.sleep(1.5)
            return await looked_up(self)

        monkeypatch.setattr(RequestContext, "current_user", slow)
        with pytest.raises(Refused) as refused:
            await WSClient.connect(served.ws_url, token, protocol=protocol)
        assert (refused.value.code, refused.value.reason) == TIMEOUT
        await asyncio.sleep(1.5)  # the check ends, its acknowledgement finds the socket closed
        monkeypatch.undo()
        assert await served.settled("graphql_ws_connections", 0) == 0
        assert await served.metric("graphql_ws_connections_pending") == 0
        async with WSClient.connect(served.ws_url, token, protocol=protocol):
            assert await served.settled("graphql_ws_connections", 1) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


@pytest.mark.slow
async def test_the_default_deadline_is_10_seconds(serve: Serve) -> None:
    async with serve() as served:
        started = time.monotonic()
        sockets = [await served.silent(protocol) for protocol in PROTOCOLS]
        closes = await asyncio.gather(*(_closed(ws, timeout=40) for ws in sockets))
        elapsed = time.monotonic() - started
        assert closes == [TIMEOUT, TIMEOUT]
        assert 9.5 <= elapsed < 40, elapsed  # Strawberry's own default is 60 s


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_acknowledged_socket_is_not_pending_and_stays(serve: Serve, protocol: str) -> None:
    async with serve(ws_init_timeout_seconds=1, ws_max_pending_per_address=1) as served:
        token = await served.api.new_user()
        async with WSClient.connect(served.ws_url, token, protocol=protocol) as ready:
            assert await served.settled("graphql_ws_connections_pending", 0) == 0
            assert await served.metric("graphql_ws_connections") == 1
            # The address's one pending slot is free for another socket.
            waiting = await served.silent(protocol)
            assert await served.settled("graphql_ws_connections_pending", 1) == 1
            assert await served.metric("graphql_ws_connections") == 2
            assert await _closed(waiting) == TIMEOUT
            await asyncio.sleep(1.5)  # well past the deadline of the acknowledged one
            op = await ready.subscribe("subscription { nope }")
            message = await ready.receive(op)
            assert message.type == "error"
            assert "nope" in orjson.dumps(message.payload).decode()
            assert await served.settled("graphql_ws_connections", 1) == 1
        assert await served.settled("graphql_ws_connections", 0) == 0
        assert await served.metric("graphql_ws_refused_total", 'reason="init_timeout"') == 1


async def test_pending_sockets_of_one_address_are_capped(serve: Serve) -> None:
    async with serve(ws_max_pending_per_address=3) as served:
        token = await served.api.new_user()
        mine = [await served.silent(address="203.0.113.7") for _ in range(3)]
        refused = await _refused(served, "203.0.113.7")
        assert refused.response.status_code == 429
        assert refused.response.headers["retry-after"] == "10"
        assert b"this address" in refused.response.body
        # Another address is not held up by this one.
        other = await served.silent(address="203.0.113.8")
        assert await served.metric("graphql_ws_connections_pending") == 4
        assert await served.metric("graphql_ws_refused_total", 'reason="pending_per_address"') == 1
        # A socket that closes makes room; one acknowledged takes none.
        await mine.pop().close()
        assert await served.settled("graphql_ws_connections_pending", 3) == 3
        ready = await WSClient.connect(
            served.ws_url, token, headers={"X-Forwarded-For": "203.0.113.7"}
        )
        mine.append(await served.silent(address="203.0.113.7"))
        assert (await _refused(served, "203.0.113.7")).response.status_code == 429
        # A pending socket that is acknowledged makes room.
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        await mine[0].send(orjson.dumps(init).decode())
        assert orjson.loads(await mine[0].recv()) == {"type": "connection_ack"}
        mine.append(await served.silent(address="203.0.113.7"))
        assert await served.metric("graphql_ws_connections_pending") == 4
        assert await served.metric("graphql_ws_connections") == 6
        assert await served.metric("graphql_ws_refused_total", 'reason="pending_per_address"') == 2
        await ready.close()
        for ws in [*mine, other]:
            await ws.close()
        assert await served.settled("graphql_ws_connections", 0) == 0
        assert await served.metric("graphql_ws_connections_pending") == 0


async def test_pending_sockets_of_an_instance_are_capped(serve: Serve) -> None:
    async with serve(ws_max_pending_per_instance=3) as served:
        held = [await served.silent(address=f"203.0.113.{i}") for i in range(3)]
        refused = await _refused(served, "198.51.100.1")
        assert refused.response.status_code == 429
        assert b"all clients" in refused.response.body
        assert await served.metric("graphql_ws_connections_pending") == 3
        assert await served.metric("graphql_ws_refused_total", 'reason="pending_per_instance"') == 1
        for ws in held:
            await ws.close()
        assert await served.settled("graphql_ws_connections", 0) == 0


async def test_many_silent_sockets_from_one_address_are_not_all_held(serve: Serve) -> None:
    """The finding: 500 silent sockets of one address were all accepted and held a minute.
    With the defaults, 20 are held (for 10 s at most) and the others refused."""
    async with serve() as served:
        outcomes = await asyncio.gather(
            *(served.silent(LEGACY if i % 2 else TRANSPORT) for i in range(30)),
            return_exceptions=True,
        )
        held = [o for o in outcomes if isinstance(o, ClientConnection)]
        refused = [o for o in outcomes if isinstance(o, InvalidStatus)]
        try:
            assert len(held) == 20, outcomes
            assert [r.response.status_code for r in refused] == [429] * 10
            assert await served.metric("graphql_ws_connections_pending") == 20
            assert await served.metric("graphql_ws_connections") == 20
        finally:
            for ws in held:
                await ws.close()
        assert await served.settled("graphql_ws_connections", 0) == 0


async def test_without_the_http_response_extension_the_upgrade_is_refused() -> None:
    """A server that cannot answer an upgrade request with a response of the app's own:
    the guard closes the socket before accepting it (uvicorn would answer 403)."""
    app_called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal app_called
        app_called = True

    settings = Settings(ws_max_pending_per_address=1)
    guard = WebsocketAdmission(app, settings=settings, metrics=Metrics())
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "websocket", "client": ("192.0.2.1", 1234), "headers": [], "state": {}}
    await guard(dict(scope), receive, send)
    assert app_called and sent == []
    await guard(dict(scope), receive, send)
    assert sent == [{"type": "websocket.close", "code": 4429}]


async def test_http_requests_pass_through(serve: Serve) -> None:
    async with serve(ws_max_pending_per_instance=1) as served:
        held = await served.silent()
        answer = await served.api.http.post("/graphql", json={"query": "{ __typename }"})
        assert answer.json()["data"] == {"__typename": "Query"}
        assert (await served.api.http.get("/health")).status_code == 200
        await held.close()
