"""Refunds in the order's history (issues 16 and 17): a cancel that flags a payment is
followed by the system's REFUND_NEEDED, and a refund is one REFUNDED event, whoever made
it and however often it was asked for or delivered."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.client import GraphQLClient
from tests.provider_server import initiate, new_order, post_webhook
from tests.test_back_office import (  # noqa: F401  (fixtures)
    REFUND,
    ScriptedProvider,
    _paid_order,
    paying,
    provider,
)

HISTORY = """
query($id: ID!) { order(id: $id) { history { kind status previousStatus version source
  actor { email } } } }
"""


async def _history(client: GraphQLClient, token: str, order_id: str) -> list[dict[str, Any]]:
    result = await client.execute(HISTORY, {"id": order_id}, token)
    return list(result.ok()["order"]["history"])


def _kinds(history: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["kind"], e["source"]) for e in history]


async def test_a_cancelled_paid_order_then_its_refund_are_in_the_history(
    paying: GraphQLClient,  # noqa: F811
    provider: ScriptedProvider,  # noqa: F811
) -> None:
    admin = await paying.make_admin("admin@example.com")
    user = await paying.signup("payer@example.com")
    order_id, payment_id = await _paid_order(paying, user)
    (await paying.move(admin, order_id, "CANCELLED", 2)).ok()
    # 40 racing refunds: one REFUNDED event, as the provider is asked once.
    answers = await asyncio.gather(
        *(paying.execute(REFUND, {"id": payment_id}, admin) for _ in range(40))
    )
    assert {a.ok()["refundPayment"]["status"] for a in answers} == {"REFUNDED"}

    seen_by_admin = await _history(paying, admin, order_id)
    assert _kinds(seen_by_admin) == [
        ("CREATED", "USER"),
        ("PAYMENT_INITIATED", "USER"),
        ("PAYMENT_SUCCEEDED", "PAYMENT_PROVIDER"),
        ("STATUS_CHANGED", "ADMIN"),
        ("REFUND_NEEDED", "SYSTEM"),
        ("REFUNDED", "ADMIN"),
    ]
    cancel, needed, refunded = seen_by_admin[-3:]
    assert (cancel["previousStatus"], cancel["status"], cancel["version"]) == (
        "PAID",
        "CANCELLED",
        3,
    )
    assert (needed["status"], needed["version"], needed["actor"]) == ("CANCELLED", 3, None)
    assert refunded["previousStatus"] is None and refunded["status"] == "CANCELLED"
    assert refunded["actor"] == {"email": "admin@example.com"}
    # The customer sees the same events, without who the admin was.
    seen_by_customer = await _history(paying, user, order_id)
    assert _kinds(seen_by_customer) == _kinds(seen_by_admin)
    assert seen_by_customer[-1]["actor"] is None and seen_by_customer[-3]["actor"] is None


async def test_the_providers_refund_is_one_event_however_often_it_is_delivered(
    client: GraphQLClient, admin_token: str, user_token: str
) -> None:
    order_id, payment_id = await _paid_order(client, user_token)
    secret = bytes(client.app.state.settings.webhook_secrets[0])
    event = {"payment_id": payment_id, "order_id": order_id, "status": "REFUNDED"}
    await asyncio.gather(*(post_webhook(client, event, secret) for _ in range(10)))

    history = await _history(client, admin_token, order_id)
    assert _kinds(history)[-2:] == [
        ("PAYMENT_SUCCEEDED", "PAYMENT_PROVIDER"),
        ("REFUNDED", "PAYMENT_PROVIDER"),
    ]
    assert history[-1]["actor"] is None and history[-1]["status"] == "PAID"


async def test_a_failed_payment_and_a_late_success_after_a_cancel(
    client: GraphQLClient, admin_token: str, user_token: str
) -> None:
    order_id = await new_order(client, user_token)
    secret = bytes(client.app.state.settings.webhook_secrets[0])
    first = (await initiate(client, user_token, order_id)).ok()["initiatePayment"]
    failed = {"payment_id": first["id"], "order_id": order_id, "status": "FAILED"}
    assert (await post_webhook(client, failed, secret)).json() == {"status": "processed"}
    second = (await initiate(client, user_token, order_id)).ok()["initiatePayment"]
    (await client.move(admin_token, order_id, "CANCELLED", 1)).ok()
    late = {"payment_id": second["id"], "order_id": order_id, "status": "SUCCESS"}
    assert (await post_webhook(client, late, secret)).json() == {"status": "refund_needed"}

    assert _kinds(await _history(client, admin_token, order_id))[1:] == [
        ("PAYMENT_INITIATED", "USER"),
        ("PAYMENT_FAILED", "PAYMENT_PROVIDER"),
        ("PAYMENT_INITIATED", "USER"),
        ("STATUS_CHANGED", "ADMIN"),
        ("REFUND_NEEDED", "PAYMENT_PROVIDER"),
    ]
