"""Lists load their children in a fixed number of statements."""

from __future__ import annotations

from typing import Any

from resolvers import events
from tests.client import ORDER_FIELDS, GraphQLClient
from tests.provider_server import initiate, new_order, post_webhook


async def test_orders_page_of_10_and_of_100_cost_the_same_statements(client_factory: Any) -> None:
    client: GraphQLClient = await client_factory(rate_limit_orders_per_minute=0)
    admin_token = await client.make_admin("admin@example.com")
    users = [await client.signup(f"u{n}@example.com") for n in range(5)]
    for n in range(110):
        (
            await client.create_order(users[n % 5], f"n{n}", [("WIDGET-001", 1), ("GADGET-002", 2)])
        ).ok()
    query = f"query($l: Int!) {{ orders(limit: $l) {{ total items {{ {ORDER_FIELDS} }} }} }}"
    # The orders' CREATED events are marked published in the background: not while counting.
    await events.flush_published(client.app.state.services)

    # The instance remembers its callers (resolvers.context.Callers): the caller read
    # once, here, and not again while counting.
    (await client.execute(query, {"l": 1}, admin_token)).ok()
    counts = {}
    for limit in (10, 100):
        with client.app.state.services.db.recording_statements() as statements:
            data = (await client.execute(query, {"l": limit}, admin_token)).ok()
        assert len(data["orders"]["items"]) == limit
        assert all(len(o["items"]) == 2 for o in data["orders"]["items"])
        counts[limit] = len(statements)
    assert counts[10] == counts[100]
    # the count, the page, its lines and owners in one; the payments
    assert counts[10] == 2


CREATE = """
mutation($input: CreateOrderInput!) { createOrder(input: $input) { id status version } }
"""


async def test_create_order_costs_five_statements_and_a_repeat_adds_none(
    client: GraphQLClient, user_token: str
) -> None:
    db = client.app.state.services.db
    variables = {"input": {"clientToken": "once", "items": [{"sku": "WIDGET-001", "qty": 2}]}}
    with db.recording_statements() as statements:
        first = (await client.execute(CREATE, variables, user_token)).ok()["createOrder"]
    # the caller, the prices, the order, its lines (in one statement), its CREATED event
    # (on PostgreSQL the same statement takes the event log's lock: ids in commit order,
    # docs/events.md)
    assert len(statements) == 5, statements
    with db.recording_statements() as statements:
        again = (await client.execute(CREATE, variables, user_token)).ok()["createOrder"]
    assert again == first
    # the caller, the prices, the insert that finds the token taken, the order it found
    assert len(statements) == 4, statements


async def test_a_success_webhook_costs_six_statements(
    client: GraphQLClient, user_token: str
) -> None:
    order_id = await new_order(client, user_token)
    payment = (await initiate(client, user_token, order_id)).ok()["initiatePayment"]
    secret = bytes(client.app.state.settings.webhook_secrets[0])
    db = client.app.state.services.db
    event = {"payment_id": payment["id"], "order_id": order_id, "status": "SUCCESS"}
    with db.recording_statements() as statements:
        response = await post_webhook(client, event, secret)
    assert response.json() == {"status": "processed"}
    # order and payment locked, the inbox row, the payment, the order, the event (with the
    # event log's lock, on PostgreSQL)
    assert len(statements) == 6, statements
    with db.recording_statements() as statements:
        replay = await post_webhook(client, event, secret)
    assert replay.json() == {"status": "duplicate"}
    assert len(statements) == 3, statements  # the two locks and the inbox row it found taken
