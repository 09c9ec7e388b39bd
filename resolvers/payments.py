"""Payments: initiate against the provider; apply the provider's webhooks.

initiatePayment never holds a transaction while the provider is asked, and writes the
payment only once the provider accepted it: a failure leaves nothing behind but a
dead-letter row. At most one PENDING payment per order is a unique partial index, so
racing calls resolve in the database.

A webhook's effect and its inbox row (unique delivery key) commit together: a replay, or
a racing duplicate, finds the key taken and changes nothing.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from infra.provider import PaymentRequest, ProviderFailed, ProviderPayment
from models.dialect import insert_ignoring_conflict
from models.state import OrderStatus, PaymentStatus, Role, allowed_next
from models.tables import Order, OutboxEvent, Payment, PaymentDeadLetter, WebhookDelivery, utcnow
from resolvers import events, orders
from resolvers.context import RequestContext, Services
from resolvers.errors import InvalidTransition, NotFound, PaymentProviderUnavailable

log = logging.getLogger("order_service.payments")

CURRENCY = "USD"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
WEBHOOK_PATH = "/payments/webhook"
SIMULATOR_PATH = "/payments/simulator"
_PENDING_ONLY = text("status = 'PENDING'")  # the predicate of uq_payments_order_pending


class ProviderStatus(StrEnum):
    """The statuses a provider's webhook may report."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class WebhookOutcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    REFUND_NEEDED = "refund_needed"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A verified, well-formed webhook: the provider's word on one payment."""

    payment_id: str
    order_id: int
    status: ProviderStatus

    @property
    def delivery_key(self) -> str:
        return f"{self.payment_id}:{self.status.value}"


def new_payment_id() -> str:
    return "pay_" + secrets.token_urlsafe(18)


def public_base_url(ctx: RequestContext) -> str:
    """Where this service is reached from outside: PUBLIC_URL, else the request's base."""
    return (ctx.settings.public_url or ctx.base_url or DEFAULT_BASE_URL).rstrip("/")


def simulator_url(base_url: str, payment_id: str) -> str:
    return f"{base_url}{SIMULATOR_PATH}/{payment_id}"


def _require_pending(order: Order) -> None:
    current = OrderStatus(order.status)
    if current is not OrderStatus.PENDING:
        raise InvalidTransition(
            f"Only a PENDING order can be paid; this one is {current.value}.",
            [s.value for s in allowed_next(current)],
        )


async def _pending_payment(session: AsyncSession, order_id: int) -> Payment | None:
    result = await session.execute(
        select(Payment).where(
            col(Payment.order_id) == order_id,
            col(Payment.status) == PaymentStatus.PENDING.value,
        )
    )
    return result.scalar_one_or_none()


async def initiate_payment(ctx: RequestContext, raw_order_id: str) -> Payment:
    user = await ctx.require_user()
    order_id = orders.parse_order_id(raw_order_id)
    services = ctx.services
    async with services.db.read() as session:
        order = await session.get(Order, order_id)
        if order is None or (user.role != Role.ADMIN and order.user_id != user.id):
            raise NotFound("Order not found.")
        _require_pending(order)
        existing = await _pending_payment(session, order_id)
    if existing is not None:
        return existing

    payment_id = new_payment_id()
    base_url = public_base_url(ctx)
    accepted = await _ask_provider(
        ctx,
        PaymentRequest(
            payment_id=payment_id,
            order_id=order_id,
            amount_cents=order.amount_cents,
            currency=CURRENCY,
            callback_url=base_url + WEBHOOK_PATH,
        ),
        base_url,
    )

    async with services.db.transaction() as session:
        # The order may have moved while the provider was asked.
        locked = await _lock_order(session, order_id)
        if locked is None:
            raise NotFound("Order not found.")
        _require_pending(locked)
        now = utcnow()
        values = {
            "id": payment_id,
            "order_id": order_id,
            "amount_cents": locked.amount_cents,
            "status": PaymentStatus.PENDING.value,
            "redirect_url": accepted.redirect_url,
            "provider_reference": accepted.reference,
            "needs_refund": False,
            "created_at": now,
            "updated_at": now,
        }
        inserted = (
            await session.execute(_insert_pending_payment(session, values))
        ).scalar_one_or_none()
        if inserted is None:
            # A racing call for this order committed its payment first: that one stands.
            winner = await _pending_payment(session, order_id)
            assert winner is not None
            log.info("payment %s lost a race to %s for order %s", payment_id, winner.id, order_id)
            return winner
        payment = Payment.model_validate(values)
    await events.after_commit(services, [], {locked.user_id})  # order.payment changed
    return payment


def _insert_pending_payment(session: AsyncSession, values: dict[str, Any]) -> Any:
    """INSERT ... ON CONFLICT (order_id) WHERE status = 'PENDING' DO NOTHING."""
    name = session.bind.dialect.name if session.bind is not None else "postgresql"
    insert = postgresql.insert if name == "postgresql" else sqlite.insert
    return (
        insert(Payment)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["order_id"], index_where=_PENDING_ONLY)
        .returning(col(Payment.id))
    )


async def _ask_provider(
    ctx: RequestContext, request: PaymentRequest, base_url: str
) -> ProviderPayment:
    services = ctx.services
    provider = services.provider
    if provider is None:
        services.metrics.payment_attempts.labels("simulated").inc()
        return ProviderPayment(redirect_url=simulator_url(base_url, request.payment_id))
    try:
        return await provider.create_payment(request)
    except ProviderFailed as exc:
        await _dead_letter(ctx, request, exc)
        raise PaymentProviderUnavailable() from None


async def _dead_letter(ctx: RequestContext, request: PaymentRequest, exc: ProviderFailed) -> None:
    log.warning(
        "payment provider unavailable for order %s (payment %s) after %d attempts: %s",
        request.order_id,
        request.payment_id,
        exc.attempts,
        exc.last_error,
        extra={"request_id": ctx.request_id},
    )
    try:
        async with ctx.services.db.transaction() as session:
            session.add(
                PaymentDeadLetter(
                    order_id=request.order_id,
                    payment_id=request.payment_id,
                    attempts=exc.attempts,
                    last_error=exc.last_error[:2000],
                )
            )
    except Exception:
        log.exception("recording the dead letter of payment %s failed", request.payment_id)


async def _lock_order(session: AsyncSession, order_id: int) -> Order | None:
    result = await session.execute(
        select(Order)
        .where(col(Order.id) == order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none()


async def _lock_payment(session: AsyncSession, payment_id: str) -> Payment:
    result = await session.execute(
        select(Payment)
        .where(col(Payment.id) == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return result.scalar_one()


async def apply_webhook(services: Services, event: ProviderEvent) -> WebhookOutcome:
    """Apply a verified webhook once; raises NotFound for an unknown payment or an
    order id that is not the payment's."""
    rows: list[OutboxEvent] = []
    async with services.db.transaction() as session:
        known = await session.get(Payment, event.payment_id)
        if known is None or known.order_id != event.order_id:
            raise NotFound("Payment not found.")
        inbox = insert_ignoring_conflict(
            session,
            WebhookDelivery,
            {
                "delivery_key": event.delivery_key,
                "payment_id": event.payment_id,
                "status": event.status.value,
                "outcome": "received",
                "received_at": utcnow(),
            },
            ["delivery_key"],
        ).returning(col(WebhookDelivery.delivery_key))
        if (await session.execute(inbox)).scalar_one_or_none() is None:
            return WebhookOutcome.DUPLICATE
        # Deliveries for one payment (SUCCESS racing FAILED) take their turns here. The
        # order is locked first, as initiatePayment and status changes do: no deadlock.
        order = await _lock_order(session, known.order_id)
        assert order is not None  # payments cascade with their order
        payment = await _lock_payment(session, event.payment_id)
        user_id = order.user_id
        if event.status is ProviderStatus.SUCCESS:
            outcome, status_event = await _apply_success(session, payment, order)
        else:
            outcome, status_event = _apply_failure(payment), None
        if status_event is not None:
            rows.append(await events.record(session, status_event))
        await session.execute(
            update(WebhookDelivery)
            .where(col(WebhookDelivery.delivery_key) == event.delivery_key)
            .values(outcome=outcome.value)
        )
    await events.after_commit(services, rows, {user_id})
    return outcome


async def _apply_success(
    session: AsyncSession, payment: Payment, order: Order
) -> tuple[WebhookOutcome, events.StatusEvent | None]:
    previous = PaymentStatus(payment.status)
    if previous is PaymentStatus.SUCCEEDED:
        return WebhookOutcome.IGNORED, None
    if previous is PaymentStatus.FAILED:
        # The provider took the money after all: honour it rather than lose it.
        log.warning("payment %s reported SUCCESS after FAILED; applying it", payment.id)
    payment.status = PaymentStatus.SUCCEEDED.value
    payment.updated_at = utcnow()
    if OrderStatus(order.status) is not OrderStatus.PENDING:
        payment.needs_refund = True
        log.warning(
            "payment %s succeeded but order %s is %s: needs refund",
            payment.id,
            order.id,
            order.status,
        )
        return WebhookOutcome.REFUND_NEEDED, None
    assert order.id is not None
    _, status_event = await orders.change_status(session, order.id, OrderStatus.PAID, order.version)
    return WebhookOutcome.PROCESSED, status_event


def _apply_failure(payment: Payment) -> WebhookOutcome:
    if PaymentStatus(payment.status) is not PaymentStatus.PENDING:
        # Never un-pay: a FAILED after SUCCESS is recorded in the inbox and goes no further.
        log.warning("payment %s reported FAILED while %s; ignored", payment.id, payment.status)
        return WebhookOutcome.IGNORED
    payment.status = PaymentStatus.FAILED.value
    payment.updated_at = utcnow()
    return WebhookOutcome.PROCESSED


async def find_payment(services: Services, payment_id: str) -> tuple[Payment, Order] | None:
    """A payment and its order, for the simulated provider's page."""
    async with services.db.read() as session:
        payment = await session.get(Payment, payment_id)
        if payment is None:
            return None
        order = await session.get(Order, payment.order_id)
        return (payment, order) if order is not None else None


async def latest_payment(services: Services, order_id: int) -> Payment | None:
    async with services.db.read() as session:
        result = await session.execute(
            select(Payment)
            .where(col(Payment.order_id) == order_id)
            .order_by(col(Payment.created_at).desc())
            .limit(1)
        )
        return result.scalar_one_or_none()
