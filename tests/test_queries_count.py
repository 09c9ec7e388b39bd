"""Lists load their children in a fixed number of statements."""

from __future__ import annotations

from typing import Any

from tests.client import ORDER_FIELDS, GraphQLClient


async def test_orders_page_of_10_and_of_100_cost_the_same_statements(client_factory: Any) -> None:
    client: GraphQLClient = await client_factory(rate_limit_orders_per_minute=0)
    admin_token = await client.make_admin("admin@example.com")
    users = [await client.signup(f"u{n}@example.com") for n in range(5)]
    for n in range(110):
        (
            await client.create_order(users[n % 5], f"n{n}", [("WIDGET-001", 1), ("GADGET-002", 2)])
        ).ok()
    query = f"query($l: Int!) {{ orders(limit: $l) {{ total items {{ {ORDER_FIELDS} }} }} }}"

    counts = {}
    for limit in (10, 100):
        with client.app.state.services.db.recording_statements() as statements:
            data = (await client.execute(query, {"l": limit}, admin_token)).ok()
        assert len(data["orders"]["items"]) == limit
        assert all(len(o["items"]) == 2 for o in data["orders"]["items"])
        counts[limit] = len(statements)
    assert counts[10] == counts[100]
    # the caller, the count, the page, and one each for lines, owners and payments
    assert counts[10] <= 6
