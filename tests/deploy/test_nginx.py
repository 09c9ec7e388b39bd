"""Debian's nginx with the production proxy configuration (deploy/nginx.conf.template)
in front of two `order-service serve` processes sharing PostgreSQL and Redis, all on
loopback: GraphQL over HTTP is balanced over both instances with the request id kept
end to end, and a subscription made through nginx gets every change exactly once,
whichever instance made it.

Runs in the PostgreSQL + Redis pass (two instances need a shared database and Redis).
nginx is found or unpacked from Debian's package (`ensure_nginx`); when neither works
the test fails, it does not skip.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import REDIS_URL, USE_PG
from tests.deploy.nginx_harness import NginxProcess, ensure_nginx, run_nginx
from tests.live import LiveServer, free_port, live_server
from tests.live_api import LiveClient, live_client
from tests.ops_support import metric
from tests.ws_client import ORDER_STATUS, TRANSPORT, WSClient

pytestmark = [
    pytest.mark.redis,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not (USE_PG and REDIS_URL),
        reason="two instances behind nginx need a shared PostgreSQL and Redis: "
        "TEST_DATABASE_URL=postgresql+asyncpg://... and TEST_REDIS_URL (the CI pass)",
    ),
]

THROUGH_NGINX = "query ThroughNginx { products { sku } }"
REQUESTS = 12
_NGINX_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")  # nginx's $request_id


@dataclass
class Cluster:
    a: LiveServer
    b: LiveServer
    proxy: NginxProcess
    via_nginx: LiveClient
    on_a: LiveClient
    on_b: LiveClient

    def instance(self, upstream: str) -> str:
        """'a' or 'b' for an upstream address as nginx logs it (HOST:PORT)."""
        names = {f"127.0.0.1:{self.a.port}": "a", f"127.0.0.1:{self.b.port}": "b"}
        return names[upstream]


@pytest.fixture
def nginx_bin() -> str:
    try:
        return ensure_nginx()
    except FileNotFoundError as exc:
        pytest.fail(f"nginx is needed for this test and cannot be had here: {exc}")


@pytest.fixture
def servers(database_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    assert REDIS_URL
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": f"t-{uuid.uuid4().hex}:",
        "RATE_LIMIT_ORDERS_PER_MINUTE": "0",
        "LOG_FORMAT": "json",
    }
    with (
        live_server(env, tmp_path, name="a") as a,
        live_server(env, tmp_path, name="b") as b,
    ):
        yield a, b


@pytest.fixture
async def cluster(
    servers: tuple[LiveServer, LiveServer], nginx_bin: str, database_url: str
) -> AsyncIterator[Cluster]:
    a, b = servers
    upstreams = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    with run_nginx(upstreams, free_port(), nginx_bin=nginx_bin) as proxy:
        async with (
            live_client(proxy.url, database_url) as via_nginx,
            live_client(a.url, database_url) as on_a,
            live_client(b.url, database_url) as on_b,
        ):
            yield Cluster(a, b, proxy, via_nginx, on_a, on_b)


def _access_ids(server: LiveServer) -> set[str]:
    """Request ids of the server's access-log lines for POST /graphql (LOG_FORMAT=json)."""
    ids = set()
    for line in server.log().splitlines():
        if not line.startswith("{"):
            continue
        record = orjson.loads(line)
        if (record.get("logger"), record.get("method"), record.get("path")) == (
            "order_service.access",
            "POST",
            "/graphql",
        ):
            ids.add(record["request_id"])
    return ids


def _nginx_upstreams(proxy: NginxProcess) -> dict[str, str]:
    """request id -> the upstream nginx sent it to, from nginx's JSON access log."""
    routed = {}
    for line in proxy.access_log.read_text().splitlines():
        record = orjson.loads(line)
        if record["uri"] == "/graphql":
            routed[record["request_id"]] = record["upstream"]
    return routed


async def _eventually(check: Any, timeout: float = 5.0) -> Any:
    """check() once it stops raising AssertionError (log lines land just after a reply)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.1)


async def test_graphql_requests_pass_through_nginx_to_both_instances(cluster: Cluster) -> None:
    via_nginx = cluster.via_nginx
    # A mutation and an authenticated query through the proxy.
    user = await via_nginx.new_user()
    order = await via_nginx.new_order(user)
    read = await via_nginx.execute(
        "query($id: ID!) { order(id: $id) { id } }", {"id": order["id"]}, user
    )
    assert read.ok()["order"]["id"] == order["id"]

    before = {
        name: await api.http.get("/metrics")
        for name, api in (("a", cluster.on_a), ("b", cluster.on_b))
    }
    sent = [f"nginx-test-{uuid.uuid4().hex[:8]}-{i}" for i in range(REQUESTS)]
    for request_id in sent:
        response = await via_nginx.http.post(
            "/graphql", json={"query": THROUGH_NGINX}, headers={"X-Request-ID": request_id}
        )
        assert response.status_code == 200, response.text
        skus = {p["sku"] for p in response.json()["data"]["products"]}
        assert {"WIDGET-001", "GADGET-002"} <= skus, response.text
        assert response.headers["x-request-id"] == request_id  # round trip through both
    # Without one, nginx makes the id, and the API uses (and echoes) nginx's.
    response = await via_nginx.http.post("/graphql", json={"query": THROUGH_NGINX})
    assert response.status_code == 200, response.text
    made_by_nginx = response.headers["x-request-id"]
    assert _NGINX_REQUEST_ID.match(made_by_nginx), made_by_nginx

    # Every id reached exactly one instance, the one nginx's log says it chose, and
    # round-robin used both.
    def landed() -> dict[str, set[str]]:
        ids = {"a": _access_ids(cluster.a), "b": _access_ids(cluster.b)}
        for request_id in [*sent, made_by_nginx]:
            assert (request_id in ids["a"]) != (request_id in ids["b"]), request_id
        return ids

    ids = await _eventually(landed)
    routed = _nginx_upstreams(cluster.proxy)
    for request_id in [*sent, made_by_nginx]:
        expected = "a" if request_id in ids["a"] else "b"
        assert cluster.instance(routed[request_id]) == expected, request_id
    per_instance = {name: len(ids[name] & set(sent)) for name in ("a", "b")}
    assert per_instance["a"] >= 1 and per_instance["b"] >= 1, per_instance
    assert per_instance["a"] + per_instance["b"] == REQUESTS

    # Each instance's /metrics counted exactly the operations it served.
    for name, api in (("a", cluster.on_a), ("b", cluster.on_b)):
        after = (await api.http.get("/metrics")).text
        counted = metric(after, "graphql_operations_total", operation="ThroughNginx", outcome="ok")
        counted -= metric(
            before[name].text, "graphql_operations_total", operation="ThroughNginx", outcome="ok"
        )
        mine = len(ids[name] & {*sent, made_by_nginx})
        assert counted == mine, (name, counted, mine)

    # The rest of the API's surface through the proxy.
    assert (await via_nginx.http.get("/health")).json() == {"status": "ok"}
    ready = await via_nginx.http.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok", ready.text
    scrape = await via_nginx.http.get("/metrics")  # nginx allows loopback scrapers
    assert scrape.status_code == 200 and "graphql_operations_total" in scrape.text


async def _instance_of_new_socket(cluster: Cluster, open_before: dict[str, int]) -> str:
    """Which instance took the websocket just opened through nginx (by the instances'
    own counts of open websockets, asked directly)."""

    async def counts() -> dict[str, int]:
        return {
            "a": (await cluster.on_a.runtime())["ws_connections"],
            "b": (await cluster.on_b.runtime())["ws_connections"],
        }

    deadline = asyncio.get_running_loop().time() + 5
    while True:
        now = await counts()
        grown = [name for name in ("a", "b") if now[name] > open_before[name]]
        if sum(now.values()) == sum(open_before.values()) + 1 and len(grown) == 1:
            open_before.update(now)
            return grown[0]
        assert asyncio.get_running_loop().time() < deadline, (open_before, now)
        await asyncio.sleep(0.05)


async def test_a_subscription_through_nginx_gets_changes_made_on_either_instance(
    cluster: Cluster,
) -> None:
    user = await cluster.via_nginx.new_user()
    admin = await cluster.on_a.new_admin()
    order = await cluster.via_nginx.new_order(user)

    # Subscribers through nginx until each instance holds one (round-robin alternates;
    # a surplus socket is closed again).
    subscribers: dict[str, WSClient] = {}
    surplus: list[WSClient] = []
    open_now = {"a": 0, "b": 0}
    try:
        for _ in range(6):
            ws = await WSClient.connect(f"{cluster.proxy.ws_url}/graphql", user, protocol=TRANSPORT)
            landed = await _instance_of_new_socket(cluster, open_now)
            if landed in subscribers:
                surplus.append(ws)
            else:
                subscribers[landed] = ws
            if len(subscribers) == 2:
                break
        assert set(subscribers) == {"a", "b"}, "nginx sent every websocket to one instance"
        for ws in surplus:
            await ws.close()

        ops = {
            name: await ws.subscribe(ORDER_STATUS, {"orderId": order["id"]})
            for name, ws in subscribers.items()
        }
        await cluster.on_a.subscribed(1)
        await cluster.on_b.subscribed(1)

        # A change made directly on each instance in turn, then one through nginx: every
        # subscriber gets each exactly once, the other instance's changes through Redis.
        changes = [
            ("instance a", cluster.on_a, "PAID", 1),
            ("instance b", cluster.on_b, "SHIPPED", 2),
            ("nginx", cluster.via_nginx, "DELIVERED", 3),
        ]
        for made_on, api, status, version in changes:
            (await api.move(admin, order["id"], status, version)).ok()
            for name, ws in subscribers.items():
                where = f"subscriber on instance {name}, change {status} made on {made_on}"
                try:
                    data = (await ws.next_data(ops[name]))["orderStatusChanged"]
                except TimeoutError:
                    raise AssertionError(f"{where}: no event in 10 s") from None
                got = (data["orderId"], data["status"], data["version"])
                assert got == (order["id"], status, version + 1), where
        # Past two outbox relay passes: nothing comes a second time.
        await asyncio.sleep(3)
        for name, ws in subscribers.items():
            await ws.expect_nothing(ops[name], 0.2)
    finally:
        for ws in [*subscribers.values(), *surplus]:
            await ws.close()
