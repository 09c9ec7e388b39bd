"""/metrics moves exactly with what clients did."""

from __future__ import annotations

from typing import Any

from server.transport.cache import Operation, OperationLabels
from tests.client import GraphQLClient
from tests.ops_support import metric, new_order, read_order, running, scrape


async def test_counters_move_exactly_with_the_actions(settings_factory: Any) -> None:
    async with running(settings_factory(rate_limit_orders_per_minute=2)) as client:
        token = await client.signup("counted@example.com")
        before = await scrape(client)

        first = await new_order(client, token, "t1")
        await new_order(client, token, "t1")  # a repeat
        await new_order(client, token, "t2")
        refused = await client.create_order(token, "t3")
        assert refused.code == "RATE_LIMITED"
        await read_order(client, token, first["id"])
        await read_order(client, token, first["id"])
        after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert moved("orders_created_total") == 2
    assert moved("rate_limited_total", limit="create_order") == 1
    assert moved("graphql_operations_total", operation="Create", type="mutation", outcome="ok") == 3
    assert moved("graphql_operations_total", operation="Create", outcome="RATE_LIMITED") == 1
    assert moved("graphql_operations_total", operation="One", type="query", outcome="ok") == 2
    assert moved("cache_requests_total", result="miss") == 1
    assert moved("cache_requests_total", result="hit") == 1
    # The scrape before ours is observed too: 4 + 2 GraphQL requests, 1 scrape.
    assert moved("http_request_duration_seconds_count", route="/graphql", method="POST") == 6
    assert moved("http_request_duration_seconds_count", route="/metrics", method="GET") == 1


async def test_operations_are_labelled_by_name_or_root_fields(client: GraphQLClient) -> None:
    await client.execute("{ products { sku } }")
    await client.execute("query Named { products { sku } }")
    await client.execute("{ nope }")
    await client.execute("{ broken")
    text = await scrape(client)
    assert metric(text, "graphql_operations_total", operation="products", outcome="ok") == 1
    assert metric(text, "graphql_operations_total", operation="Named", type="query") == 1
    assert (
        metric(
            text, "graphql_operations_total", operation="nope", outcome="GRAPHQL_VALIDATION_FAILED"
        )
        == 1
    )
    assert (
        metric(
            text, "graphql_operations_total", operation="unknown", outcome="GRAPHQL_PARSE_FAILED"
        )
        == 1
    )


def test_operation_labels_are_capped() -> None:
    # Clients choose operation names: a flood of new ones must not grow the metrics.
    labels = OperationLabels(limit=3)
    ops = [Operation(f"Op{i}", "query", frozenset({"products"})) for i in range(5)]
    assert [labels(op) for op in ops] == ["Op0", "Op1", "Op2", "other", "other"]
    assert labels(ops[0]) == "Op0"
    assert labels(Operation("a" * 200, "query", frozenset())) == "other"
    assert labels(None) == "unknown"


async def test_gauges_are_exposed(client: GraphQLClient) -> None:
    text = await scrape(client)
    for name in (
        "db_pool_connections_in_use",
        "outbox_unpublished_events",
        "graphql_active_subscriptions",
        "graphql_ws_connections",
    ):
        assert f"\n{name} " in text, name
    assert "webhook_deliveries_total" in text
