"""The read cache: a client always reads its own writes, on one instance and across two,
and nobody is ever handed another caller's cached answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import orjson
import pytest

from infra.security import sign_webhook
from models.state import Role
from resolvers import accounts
from resolvers.context import RequestContext
from tests.client import GraphQLClient
from tests.ops_support import (
    ORDER,
    ORDERS,
    metric_now,
    new_order,
    read_order,
    running,
    shared_redis,
)

Pair = tuple[GraphQLClient, GraphQLClient]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with shared_redis() as url:
        yield url


@pytest.fixture(params=["memory", "redis"])
async def pair(
    request: pytest.FixtureRequest, settings_factory: Any, redis_url: str
) -> AsyncIterator[Pair]:
    """Two ways into the service: one in-memory instance twice, or two instances that
    share a database and a Redis."""
    async with AsyncExitStack() as stack:
        if request.param == "memory":
            one = await stack.enter_async_context(running(settings_factory(redis_url=None)))
            yield one, one
        else:
            settings = settings_factory(redis_url=redis_url)
            one = await stack.enter_async_context(running(settings))
            two = await stack.enter_async_context(running(settings))
            yield one, two


async def demote(client: GraphQLClient, email: str) -> None:
    """A role change as `order-service set-role` makes it, through `client`'s services."""
    ctx = RequestContext(services=client.app.state.services, request_id="test")
    await accounts.set_role(ctx, email, Role.USER)


async def cache_counts(client: GraphQLClient) -> tuple[float, float]:
    return (
        await metric_now(client, "cache_requests_total", result="hit"),
        await metric_now(client, "cache_requests_total", result="miss"),
    )


async def listed(client: GraphQLClient, token: str) -> dict[str, tuple[str, int]]:
    data = (await client.execute(ORDERS, token=token)).ok()["orders"]
    return {o["id"]: (o["status"], o["version"]) for o in data["items"]}


async def test_every_instance_serves_the_last_acknowledged_write(pair: Pair) -> None:
    one, two = pair
    admin = await one.make_admin("boss@example.com")
    user = await one.signup("user@example.com")
    order_id = (await new_order(one, user, "t1"))["id"]
    for client in (one, two):
        for token in (user, admin):
            for _ in range(2):  # the second read is served from the cache
                assert (await read_order(client, token, order_id))["status"] == "PENDING"
                assert (await listed(client, token))[order_id] == ("PENDING", 1)

    version = 1
    for writer, status in ((one, "PAID"), (two, "SHIPPED"), (one, "DELIVERED")):
        (await writer.move(admin, order_id, status, version)).ok()
        version += 1
        for client in (one, two):
            for token in (user, admin):
                seen = await read_order(client, token, order_id)
                assert (seen["status"], seen["version"]) == (status, version)
                assert (await listed(client, token))[order_id] == (status, version)

    # A new order shows up in the (cached) lists at once, too.
    second = (await new_order(two, user, "t2"))["id"]
    for client in (one, two):
        assert second in await listed(client, user)
        assert second in await listed(client, admin)


async def test_racing_reads_never_go_back_in_time(pair: Pair) -> None:
    one, two = pair
    admin = await one.make_admin("boss@example.com")
    user = await one.signup("user@example.com")
    order_id = (await new_order(one, user, "t1"))["id"]
    acknowledged = 1
    done = False
    reads = 0

    async def reader(client: GraphQLClient, token: str) -> None:
        nonlocal reads
        while not done:
            floor = acknowledged  # every write acknowledged before the read is sent
            if reads % 2:
                version = (await read_order(client, token, order_id))["version"]
            else:
                version = (await listed(client, token))[order_id][1]
            assert version >= floor, f"read version {version} after write {floor} returned"
            reads += 1
            # A hit does no I/O in memory (its caller remembered): let the writer run.
            await asyncio.sleep(0)

    async def writer() -> None:
        nonlocal acknowledged, done
        try:
            for i, status in enumerate(("PAID", "SHIPPED", "DELIVERED")):
                await asyncio.sleep(0.05)
                client = one if i % 2 else two
                moved = (await client.move(admin, order_id, status, acknowledged)).ok()
                acknowledged = moved["updateOrderStatus"]["version"]
            await asyncio.sleep(0.05)
        finally:
            done = True

    readers = [reader(c, t) for c in (one, two) for t in (user, admin)]
    await asyncio.gather(writer(), *readers)
    assert acknowledged == 4
    assert reads > 20
    hits, _ = await cache_counts(one)
    assert hits > 0


async def test_callers_never_share_cached_answers(client: GraphQLClient) -> None:
    alice = await client.signup("alice@example.com")
    bob = await client.signup("bob@example.com")
    boss = await client.make_admin("boss@example.com")
    other_boss = await client.make_admin("other-boss@example.com")
    alice_order = (await new_order(client, alice, "a1"))["id"]
    for _ in range(2):
        assert set(await listed(client, alice)) == {alice_order}
        assert await listed(client, bob) == {}
        missing = await client.execute(ORDER, {"id": alice_order}, bob)
        assert missing.code == "NOT_FOUND"
        assert missing.data == {"order": None}
        assert set(await listed(client, boss)) == {alice_order}
        assert set(await listed(client, other_boss)) == {alice_order}
        assert (await client.execute(ORDERS)).code == "UNAUTHENTICATED"

    # The role comes from the database: a demoted admin's token reaches only its own.
    await demote(client, "boss@example.com")
    assert await listed(client, boss) == {}
    assert (await client.execute(ORDER, {"id": alice_order}, boss)).code == "NOT_FOUND"


async def test_hits_and_misses_are_counted(client: GraphQLClient, admin_token: str) -> None:
    user = await client.signup("user@example.com")
    order_id = (await new_order(client, user, "t1"))["id"]
    assert await cache_counts(client) == (0, 0)
    await read_order(client, user, order_id)
    assert await cache_counts(client) == (0, 1)
    await read_order(client, user, order_id)
    await read_order(client, user, order_id)
    assert await cache_counts(client) == (2, 1)
    # Other variables, another operation: another entry.
    await client.execute(ORDER.replace("One", "Two"), {"id": order_id}, user)
    assert await cache_counts(client) == (2, 2)
    # A write makes the next read a miss.
    (await client.move(admin_token, order_id, "PAID", 1)).ok()
    await read_order(client, user, order_id)
    assert await cache_counts(client) == (2, 3)
    # Not cached: anything beyond order/orders, mutations, anonymous callers.
    await client.execute("{ me { id } orders { total } }", token=user)
    await client.create_order(user, "t2")
    await client.execute(ORDERS)
    assert await cache_counts(client) == (2, 3)


async def test_a_ttl_of_zero_turns_the_cache_off(settings_factory: Any) -> None:
    async with running(settings_factory(cache_ttl_seconds=0)) as client:
        user = await client.signup("user@example.com")
        order_id = (await new_order(client, user, "t1"))["id"]
        for _ in range(3):
            await read_order(client, user, order_id)
        assert await cache_counts(client) == (0, 0)


async def test_payments_and_webhooks_invalidate_cached_reads(pair: Pair) -> None:
    one, two = pair
    user = await one.signup("payer@example.com")
    order_id = (await new_order(one, user, "t1"))["id"]
    for client in (one, two):
        for _ in range(2):
            assert (await read_order(client, user, order_id))["payment"] is None

    started = await one.execute(
        "mutation Pay($i: InitiatePaymentInput!) { initiatePayment(input: $i) { id status } }",
        {"i": {"orderId": order_id}},
        user,
    )
    payment_id = started.ok()["initiatePayment"]["id"]
    for client in (one, two):
        assert (await read_order(client, user, order_id))["payment"]["status"] == "PENDING"

    body = orjson.dumps({"payment_id": payment_id, "order_id": order_id, "status": "SUCCESS"})
    secret = two.app.state.settings.webhook_secrets[0]
    delivered = await two.http.post(
        "/payments/webhook",
        content=body,
        headers={"X-Signature": sign_webhook(body, secret), "Content-Type": "application/json"},
    )
    assert delivered.status_code == 200
    for client in (one, two):
        seen = await read_order(client, user, order_id)
        assert (seen["status"], seen["payment"]["status"]) == ("PAID", "SUCCEEDED")


async def test_a_hit_answers_the_same_bytes_and_headers_as_the_miss_that_stored_it(
    client: GraphQLClient,
) -> None:
    user = await client.signup("user@example.com")
    await new_order(client, user, "t1")
    body = orjson.dumps({"query": ORDERS, "variables": {}})
    headers = {"content-type": "application/json", "authorization": f"Bearer {user}"}
    miss = await client.http.post("/graphql", content=body, headers=headers)
    hit = await client.http.post("/graphql", content=body, headers=headers)
    assert await cache_counts(client) == (1, 1)
    assert (hit.status_code, hit.content) == (miss.status_code, miss.content)
    assert hit.headers["content-type"] == miss.headers["content-type"] == "application/json"
    assert orjson.loads(hit.content)["data"]["orders"]["total"] == 1
    # What is not plain JSON is Strawberry's to answer, cached or not.
    odd = await client.http.post(
        "/graphql", content=body, headers={**headers, "content-type": "text/plain"}
    )
    assert odd.status_code == 400
    assert await cache_counts(client) == (1, 1)
