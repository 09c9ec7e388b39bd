"""One webhook delivery, from raw bytes to an HTTP answer: verify, parse, apply.

The Starlette route and the simulated provider both come through here, so a simulated
payment takes exactly the path a real provider's callback takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from infra import tracing
from infra.security import sign_webhook, verify_webhook_signature
from resolvers import orders, payments
from resolvers.context import Services
from resolvers.errors import NotFound

log = logging.getLogger("order_service.webhooks")

SIGNATURE_HEADER = "X-Signature"
MAX_PAYMENT_ID = 64


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    body: dict[str, Any]


class Malformed(ValueError):
    """The body is not a webhook we understand; the message says why (never echoes it)."""


def signed_delivery(
    payment_id: str, order_id: int | str, status: str, secret: bytes
) -> tuple[bytes, dict[str, str]]:
    """A webhook body and its headers, signed as the provider signs them."""
    body = orjson.dumps({"payment_id": payment_id, "order_id": str(order_id), "status": status})
    headers = {"content-type": "application/json", SIGNATURE_HEADER: sign_webhook(body, secret)}
    return body, headers


def parse_event(body: bytes) -> payments.ProviderEvent:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Malformed("the body is not JSON") from None
    if not isinstance(data, dict):
        raise Malformed("the body is not a JSON object")
    payment_id = data.get("payment_id")
    if not isinstance(payment_id, str) or not 0 < len(payment_id) <= MAX_PAYMENT_ID:
        raise Malformed(f"payment_id must be a string of 1 to {MAX_PAYMENT_ID} characters")
    raw_order_id = data.get("order_id")
    if isinstance(raw_order_id, bool) or not isinstance(raw_order_id, int | str):
        raise Malformed("order_id must be a string or an integer")
    # A number is well-formed; whether an order has it is for `apply_webhook` (a 404).
    order_id = orders.whole_number(raw_order_id)
    if order_id is None:
        raise Malformed("order_id must be an order id")
    status = data.get("status")
    if not isinstance(status, str) or status not in payments.ProviderStatus.__members__:
        raise Malformed("status must be SUCCESS, FAILED or REFUNDED")
    return payments.ProviderEvent(
        payment_id=payment_id, order_id=order_id, status=payments.ProviderStatus(status)
    )


async def process_delivery(
    services: Services, body: bytes, signature: str | None, *, request_id: str | None = None
) -> Answer:
    """Verify the signature over the raw bytes before anything reads them, then apply."""
    if tracing.active():
        # The signature, the body and the secret are never attributes: only the answer.
        with tracing.span("webhook.process") as current:
            answer = await _process(services, body, signature, request_id=request_id)
            if current is not None and current.is_recording():
                current.set_attribute("http.response.status_code", answer.status_code)
            return answer
    return await _process(services, body, signature, request_id=request_id)


async def _process(
    services: Services, body: bytes, signature: str | None, *, request_id: str | None
) -> Answer:
    outcomes = services.metrics.webhook_outcomes
    extra = {"request_id": request_id}
    if not verify_webhook_signature(body, signature, services.settings.webhook_secrets):
        outcomes.labels("bad_signature").inc()
        log.warning("webhook refused: missing or wrong signature", extra=extra)
        return Answer(401, {"error": "invalid_signature", "message": "Missing or wrong signature."})
    try:
        event = parse_event(body)
    except Malformed as exc:
        outcomes.labels("malformed").inc()
        log.warning("webhook refused: malformed body: %s", exc, extra=extra)
        return Answer(400, {"error": "malformed", "message": str(exc)})
    try:
        outcome = await payments.apply_webhook(services, event)
    except NotFound:
        outcomes.labels("unknown").inc()
        log.warning(
            "webhook refused: no payment %s for order %s",
            event.payment_id,
            event.order_id,
            extra=extra,
        )
        return Answer(404, {"error": "not_found", "message": "No such payment for this order."})
    outcomes.labels(outcome.value).inc()
    log.info(
        "webhook %s for payment %s: %s",
        event.status.value,
        event.payment_id,
        outcome.value,
        extra=extra,
    )
    return Answer(200, {"status": outcome.value})
