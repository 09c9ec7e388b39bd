"""POST /payments/webhook: signatures, malformed bodies, unknown payments, and effects that
happen once however often, and however concurrently, a delivery arrives."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import Counter
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlmodel import col

from models.tables import OutboxEvent, Payment, WebhookDelivery
from tests.client import GraphQLClient
from tests.provider_server import (
    initiate,
    metric,
    new_order,
    open_client,
    post_webhook,
    read_order,
)

OUTCOMES = "webhook_deliveries_total"


def _secret(client: GraphQLClient) -> bytes:
    return bytes(client.app.state.settings.webhook_secrets[0])


async def _pending_payment(client: GraphQLClient, token: str, client_token: str = "t1") -> Any:
    order_id = await new_order(client, token, client_token)
    payment = (await initiate(client, token, order_id)).ok()["initiatePayment"]
    return order_id, payment["id"]


def _event(payment_id: str, order_id: str | int, status: str = "SUCCESS") -> dict[str, Any]:
    return {"payment_id": payment_id, "order_id": order_id, "status": status}


async def _payment_row(client: GraphQLClient, payment_id: str) -> Payment:
    async with client.app.state.services.db.read() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        return payment


async def _events_for(client: GraphQLClient, order_id: str) -> list[dict[str, Any]]:
    """The order's status changes in the event log (its other events are left out)."""
    async with client.app.state.services.db.read() as session:
        rows = (await session.execute(select(OutboxEvent).order_by(col(OutboxEvent.id)))).scalars()
        payloads = [orjson.loads(r.payload) for r in rows]
    return [
        p for p in payloads if p["order_id"] == int(order_id) and p["previous_status"] is not None
    ]


async def _inbox(client: GraphQLClient) -> list[WebhookDelivery]:
    async with client.app.state.services.db.read() as session:
        return list((await session.execute(select(WebhookDelivery))).scalars())


async def test_success_pays_the_order_once(
    client: GraphQLClient, user_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    order_id, payment_id = await _pending_payment(client, user_token)
    payload = _event(payment_id, order_id)
    body = orjson.dumps(payload)
    signature = "sha256=" + hmac.new(_secret(client), body, hashlib.sha256).hexdigest()

    first = await post_webhook(client, body, None, signature=signature)

    assert first.status_code == 200
    assert first.json() == {"status": "processed"}
    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["version"]) == ("PAID", 2)
    assert order["payment"]["status"] == "SUCCEEDED"
    [event] = await _events_for(client, order_id)
    assert (event["status"], event["previous_status"], event["version"]) == ("PAID", "PENDING", 2)

    # A replay, with the order id as a number this time, changes nothing and still answers 200.
    again = await post_webhook(client, _event(payment_id, int(order_id)), _secret(client))
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert (await read_order(client, user_token, order_id))["version"] == 2
    assert len(await _events_for(client, order_id)) == 1
    assert metric(client, OUTCOMES, outcome="processed") == 1
    assert metric(client, OUTCOMES, outcome="duplicate") == 1
    # Neither the body nor the signature reach the logs.
    assert signature.removeprefix("sha256=") not in caplog.text
    assert body.decode() not in caplog.text


async def test_twenty_concurrent_deliveries_change_the_order_once(
    client: GraphQLClient, user_token: str
) -> None:
    order_id, payment_id = await _pending_payment(client, user_token)
    payload = _event(payment_id, order_id)

    answers = await asyncio.gather(
        *(post_webhook(client, payload, _secret(client)) for _ in range(20))
    )

    assert [a.status_code for a in answers] == [200] * 20
    assert Counter(a.json()["status"] for a in answers) == {"processed": 1, "duplicate": 19}
    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["version"]) == ("PAID", 2)
    assert len(await _events_for(client, order_id)) == 1
    assert [(d.delivery_key, d.outcome) for d in await _inbox(client)] == [
        (f"{payment_id}:SUCCESS", "processed")
    ]


async def test_racing_success_and_failure_settle_once(
    client: GraphQLClient, user_token: str
) -> None:
    order_id, payment_id = await _pending_payment(client, user_token)
    deliveries = [_event(payment_id, order_id, s) for s in ("SUCCESS", "FAILED") * 6]

    answers = await asyncio.gather(*(post_webhook(client, d, _secret(client)) for d in deliveries))

    assert {a.status_code for a in answers} == {200}
    order = await read_order(client, user_token, order_id)
    # Money the provider reports taken is never lost, whichever came first.
    assert (order["status"], order["version"]) == ("PAID", 2)
    assert order["payment"]["status"] == "SUCCEEDED"
    assert len(await _events_for(client, order_id)) == 1


def _sign(body: bytes, secret: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


BAD_SIGNATURES = {
    "missing": lambda body, secret: None,
    "empty": lambda body, secret: "",
    "prefix only": lambda body, secret: "sha256=",
    "wrong secret": lambda body, secret: "sha256=" + _sign(body, b"not-the-secret"),
    "other body": lambda body, secret: "sha256=" + _sign(body + b" ", secret),
    "wrong prefix": lambda body, secret: "sha1=" + _sign(body, secret),
    "upper-cased prefix": lambda body, secret: "SHA256=" + _sign(body, secret),
    "no prefix": lambda body, secret: _sign(body, secret),
    "truncated": lambda body, secret: "sha256=" + _sign(body, secret)[:-1],
    "upper-cased hex": lambda body, secret: "sha256=" + _sign(body, secret).upper(),
    "padded": lambda body, secret: " sha256=" + _sign(body, secret),
    "doubled": lambda body, secret: "sha256=" + _sign(body, secret) * 2,
}


async def test_every_bad_signature_is_refused_and_changes_nothing(
    client: GraphQLClient, user_token: str
) -> None:
    order_id, payment_id = await _pending_payment(client, user_token)
    body = orjson.dumps(_event(payment_id, order_id))

    for form, make in BAD_SIGNATURES.items():
        signature = make(body, _secret(client))
        headers = {"content-type": "application/json"}
        if signature is not None:
            headers["x-signature"] = signature
        answer = await client.http.post("/payments/webhook", content=body, headers=headers)
        assert answer.status_code == 401, form

    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["version"]) == ("PENDING", 1)
    assert order["payment"]["status"] == "PENDING"
    assert await _inbox(client) == []
    assert metric(client, OUTCOMES, outcome="bad_signature") == len(BAD_SIGNATURES)
    # The same body, correctly signed, goes through: only the signature was wrong.
    assert (await post_webhook(client, body, _secret(client))).status_code == 200


MALFORMED: dict[str, Any] = {
    "not json": b"payment_id=pay_x&status=SUCCESS",
    "empty": b"",
    "truncated json": b'{"payment_id": "pay_x", "order_id": "1", "status": "SUCC',
    "not utf-8": b'{"payment_id": "\xff\xfe", "order_id": "1", "status": "SUCCESS"}',
    "an array": [],
    "a string": "SUCCESS",
    "a number": 1,
    "no payment_id": {"order_id": "{order}", "status": "SUCCESS"},
    "no order_id": {"payment_id": "{payment}", "status": "SUCCESS"},
    "no status": {"payment_id": "{payment}", "order_id": "{order}"},
    "unknown status": {"payment_id": "{payment}", "order_id": "{order}", "status": "PAID"},
    "lower-case status": {"payment_id": "{payment}", "order_id": "{order}", "status": "success"},
    "null status": {"payment_id": "{payment}", "order_id": "{order}", "status": None},
    "numeric payment_id": {"payment_id": 7, "order_id": "{order}", "status": "SUCCESS"},
    "empty payment_id": {"payment_id": "", "order_id": "{order}", "status": "SUCCESS"},
    "long payment_id": {"payment_id": "p" * 65, "order_id": "{order}", "status": "SUCCESS"},
    "float order_id": {"payment_id": "{payment}", "order_id": 1.5, "status": "SUCCESS"},
    "bool order_id": {"payment_id": "{payment}", "order_id": True, "status": "SUCCESS"},
    "null order_id": {"payment_id": "{payment}", "order_id": None, "status": "SUCCESS"},
    "list order_id": {"payment_id": "{payment}", "order_id": ["{order}"], "status": "SUCCESS"},
    "word order_id": {"payment_id": "{payment}", "order_id": "abc", "status": "SUCCESS"},
    "negative order_id": {"payment_id": "{payment}", "order_id": -1, "status": "SUCCESS"},
    "signed order_id": {"payment_id": "{payment}", "order_id": "-1", "status": "SUCCESS"},
    "huge order_id": {"payment_id": "{payment}", "order_id": "9" * 40, "status": "SUCCESS"},
}


def _fill(value: Any, order_id: str, payment_id: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, order_id, payment_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, order_id, payment_id) for v in value]
    if value == "{order}":
        return order_id
    if value == "{payment}":
        return payment_id
    return value


async def test_every_malformed_body_is_a_400(client: GraphQLClient, user_token: str) -> None:
    order_id, payment_id = await _pending_payment(client, user_token)

    for case, template in MALFORMED.items():
        answer = await post_webhook(client, _fill(template, order_id, payment_id), _secret(client))
        assert answer.status_code == 400, case
        assert answer.json()["error"] == "malformed", case

    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["version"]) == ("PENDING", 1)
    assert order["payment"]["status"] == "PENDING"
    assert await _inbox(client) == []
    assert metric(client, OUTCOMES, outcome="malformed") == len(MALFORMED)


async def test_an_unknown_payment_or_another_orders_id_is_a_404(
    client: GraphQLClient, user_token: str
) -> None:
    order_id, payment_id = await _pending_payment(client, user_token)
    other_order, _ = await _pending_payment(client, user_token, "t2")

    unknown = await post_webhook(client, _event("pay_nope", order_id), _secret(client))
    mismatched = await post_webhook(client, _event(payment_id, other_order), _secret(client))
    missing_order = await post_webhook(client, _event(payment_id, "999999"), _secret(client))

    assert [a.status_code for a in (unknown, mismatched, missing_order)] == [404, 404, 404]
    for oid in (order_id, other_order):
        order = await read_order(client, user_token, oid)
        assert (order["status"], order["payment"]["status"]) == ("PENDING", "PENDING")
    assert await _inbox(client) == []
    assert metric(client, OUTCOMES, outcome="unknown") == 3


async def test_failed_keeps_the_order_pending_and_a_new_payment_can_start(
    client: GraphQLClient, user_token: str
) -> None:
    order_id, payment_id = await _pending_payment(client, user_token)

    answer = await post_webhook(client, _event(payment_id, order_id, "FAILED"), _secret(client))

    assert (answer.status_code, answer.json()) == (200, {"status": "processed"})
    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["version"]) == ("PENDING", 1)
    assert order["payment"] == {**order["payment"], "id": payment_id, "status": "FAILED"}
    assert await _events_for(client, order_id) == []

    retry = (await initiate(client, user_token, order_id)).ok()["initiatePayment"]
    assert retry["id"] != payment_id
    assert retry["status"] == "PENDING"
    assert (await read_order(client, user_token, order_id))["payment"]["id"] == retry["id"]

    paid = await post_webhook(client, _event(retry["id"], order_id), _secret(client))
    assert paid.json() == {"status": "processed"}
    assert (await read_order(client, user_token, order_id))["status"] == "PAID"


async def test_failed_after_success_never_unpays(client: GraphQLClient, user_token: str) -> None:
    order_id, payment_id = await _pending_payment(client, user_token)
    await post_webhook(client, _event(payment_id, order_id, "SUCCESS"), _secret(client))

    late = await post_webhook(client, _event(payment_id, order_id, "FAILED"), _secret(client))

    assert (late.status_code, late.json()) == (200, {"status": "ignored"})
    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["version"]) == ("PAID", 2)
    assert order["payment"]["status"] == "SUCCEEDED"
    outcomes = {d.delivery_key: d.outcome for d in await _inbox(client)}
    assert outcomes == {f"{payment_id}:SUCCESS": "processed", f"{payment_id}:FAILED": "ignored"}


async def test_success_after_failed_is_honoured(client: GraphQLClient, user_token: str) -> None:
    order_id, payment_id = await _pending_payment(client, user_token)
    await post_webhook(client, _event(payment_id, order_id, "FAILED"), _secret(client))

    late = await post_webhook(client, _event(payment_id, order_id, "SUCCESS"), _secret(client))

    assert (late.status_code, late.json()) == (200, {"status": "processed"})
    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["payment"]["status"]) == ("PAID", "SUCCEEDED")


async def test_success_after_cancel_flags_a_refund_and_leaves_the_order(
    client: GraphQLClient, user_token: str, admin_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    order_id, payment_id = await _pending_payment(client, user_token)
    (await client.move(admin_token, order_id, "CANCELLED", 1)).ok()

    answer = await post_webhook(client, _event(payment_id, order_id), _secret(client))

    assert (answer.status_code, answer.json()) == (200, {"status": "refund_needed"})
    order = await read_order(client, user_token, order_id)
    assert (order["status"], order["version"]) == ("CANCELLED", 2)
    assert order["payment"]["status"] == "SUCCEEDED"
    assert (await _payment_row(client, payment_id)).needs_refund is True
    assert "needs refund" in caplog.text
    assert metric(client, OUTCOMES, outcome="refund_needed") == 1
    assert [e["status"] for e in await _events_for(client, order_id)] == ["CANCELLED"]


async def test_rotated_secrets_all_verify(settings_factory: Any) -> None:
    settings = settings_factory(webhook_secret="new-secret-0123456789, old-secret-0123456789")
    async with open_client(settings) as client:
        token = await client.signup("payer@example.com")
        order_id, payment_id = await _pending_payment(client, token)
        other_order, other_payment = await _pending_payment(client, token, "t2")

        by_old = await post_webhook(client, _event(payment_id, order_id), b"old-secret-0123456789")
        by_new = await post_webhook(
            client, _event(other_payment, other_order), b"new-secret-0123456789"
        )
        by_neither = await post_webhook(
            client, _event(payment_id, order_id, "FAILED"), b"older-secret-0123456789"
        )

        assert (by_old.status_code, by_new.status_code) == (200, 200)
        assert by_neither.status_code == 401
        for oid in (order_id, other_order):
            assert (await read_order(client, token, oid))["status"] == "PAID"


async def test_only_post_is_accepted(client: GraphQLClient) -> None:
    assert (await client.http.get("/payments/webhook")).status_code == 405


async def test_an_oversized_body_is_refused_before_reading(client: GraphQLClient) -> None:
    body = b"{" + b" " * 2_000_000 + b"}"
    answer = await post_webhook(client, body, _secret(client))
    assert answer.status_code == 413
