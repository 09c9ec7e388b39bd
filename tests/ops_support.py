"""Helpers for the operations tests (limits, cache, metrics, logs, degradation)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from infra.settings import Settings
from server.app import create_app
from tests.client import ORDER_FIELDS, GraphQLClient
from tests.redis_server import RedisServer

REDIS_URL = os.environ.get("TEST_REDIS_URL") or None

ORDER = f"query One($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}"
ORDERS = "query Mine { orders(limit: 50) { total items { id status version user { email } } } }"


@contextmanager
def shared_redis() -> Iterator[str]:
    """The run's Redis (TEST_REDIS_URL), or a private one when the run has none, so that
    the Redis code paths are tested on both backends."""
    if REDIS_URL:
        yield REDIS_URL
        return
    with RedisServer() as server:
        yield server.url


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[GraphQLClient]:
    """An app started with `settings` (lifespan included) and a client speaking to it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield GraphQLClient(http, app)


async def scrape(client: GraphQLClient) -> str:
    response = await client.http.get("/metrics")
    assert response.status_code == 200
    return response.text


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def metric_now(client: GraphQLClient, name: str, **labels: str) -> float:
    return metric(await scrape(client), name, **labels)


async def ready(client: GraphQLClient) -> tuple[int, dict[str, Any]]:
    response = await client.http.get("/ready")
    return response.status_code, response.json()


async def wait_until_ready(client: GraphQLClient, status: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        _, body = await ready(client)
        if body["status"] == status:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"/ready never said {status!r}: {body}")
        await asyncio.sleep(0.1)


async def new_order(client: GraphQLClient, token: str, client_token: str) -> dict[str, Any]:
    return dict((await client.create_order(token, client_token)).ok()["createOrder"])


async def read_order(client: GraphQLClient, token: str, order_id: str) -> dict[str, Any]:
    result = await client.execute(ORDER, {"id": order_id}, token)
    return dict(result.ok()["order"])
