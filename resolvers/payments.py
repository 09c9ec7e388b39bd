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

from infra import tracing
from infra.provider import PaymentRequest, ProviderFailed, ProviderPayment
from models import queries
from models.rows import OrderRow, OutboxRow, PaymentRow, replace
from models.state import OrderStatus, PaymentStatus, allowed_next
from models.tables import utcnow
from resolvers import events, orders, refunds
from resolvers.context import RequestContext, Services
from resolvers.errors import InvalidTransition, NotFound, PaymentProviderUnavailable

log = logging.getLogger("order_service.payments")

CURRENCY = "USD"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
WEBHOOK_PATH = "/payments/webhook"
SIMULATOR_PATH = "/payments/simulator"


class ProviderStatus(StrEnum):
    """The statuses a provider's webhook may report."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    # The provider gave the money back on its own (a refund made in its dashboard, say).
    REFUNDED = "REFUNDED"


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


def _require_pending(order: OrderRow) -> None:
    current = OrderStatus(order.status)
    if current is not OrderStatus.PENDING:
        raise InvalidTransition(
            f"Only a PENDING order can be paid; this one is {current.value}.",
            [s.value for s in allowed_next(current)],
        )


@tracing.use_case("payments.initiate")
async def initiate_payment(ctx: RequestContext, raw_order_id: str) -> PaymentRow:
    user = await ctx.require_user()
    order_id = orders.parse_order_id(raw_order_id)
    services = ctx.services
    async with services.db.connect() as conn:
        order = await orders.visible_order(conn, user, order_id)
        _require_pending(order)
        existing = await queries.pending_payment(conn, order_id)
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

    async with services.db.begin() as conn:
        # The order may have moved while the provider was asked.
        locked = await queries.order_by_id(conn, order_id, lock=True)
        if locked is None:
            raise NotFound("Order not found.")
        _require_pending(locked)
        payment = await queries.insert_pending_payment(
            conn,
            payment_id=payment_id,
            order_id=order_id,
            amount_cents=locked.amount_cents,
            redirect_url=accepted.redirect_url,
            provider_reference=accepted.reference,
            now=utcnow(),
        )
        if payment is None:
            # A racing call for this order committed its payment first: that one stands.
            winner = await queries.pending_payment(conn, order_id)
            assert winner is not None
            log.info("payment %s lost a race to %s for order %s", payment_id, winner.id, order_id)
            return winner
        initiated = await events.record_event(
            conn,
            locked,
            events.EventKind.PAYMENT_INITIATED,
            source=events.source_of(user),
            actor_id=user.id,
        )
    await events.after_commit(services, [initiated], {locked.user_id})  # order.payment changed
    return payment


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
        async with ctx.services.db.begin() as conn:
            await queries.insert_dead_letter(
                conn,
                order_id=request.order_id,
                payment_id=request.payment_id,
                attempts=exc.attempts,
                last_error=exc.last_error[:2000],
                now=utcnow(),
            )
        await events.after_commit(ctx.services, [], set())  # the dead letters changed
        ctx.services.metrics.dead_letters_written.inc()
    except Exception:
        log.exception("recording the dead letter of payment %s failed", request.payment_id)


@tracing.use_case("payments.apply_webhook")
async def apply_webhook(services: Services, event: ProviderEvent) -> WebhookOutcome:
    """Apply a verified webhook once; raises NotFound for an unknown payment or an
    order id that is not the payment's.

    The order is locked first, then the payment, as initiatePayment and status changes
    lock: deliveries for one payment (SUCCESS racing FAILED, or a replay racing the
    original) take their turns, without deadlocks. The outcome is decided on the locked
    rows, and the delivery is recorded in the inbox with it; a replay finds its key
    taken and changes nothing.
    """
    if orders.as_order_id(event.order_id) is None:
        raise NotFound("Payment not found.")  # no order has such an id
    rows: list[OutboxRow] = []
    async with services.db.begin() as conn:
        order = await queries.order_by_id(conn, event.order_id, lock=True)
        payment = await queries.payment_by_id(conn, event.payment_id, lock=True)
        if order is None or payment is None or payment.order_id != order.id:
            raise NotFound("Payment not found.")
        if event.status is ProviderStatus.SUCCESS:
            outcome, changed, warning = _success(payment, order)
        elif event.status is ProviderStatus.FAILED:
            outcome, changed, warning = _failure(payment)
        else:
            outcome, changed, warning = _refunded(payment)
        recorded = await queries.record_delivery(
            conn,
            delivery_key=event.delivery_key,
            payment_id=event.payment_id,
            status=event.status.value,
            outcome=outcome.value,
            now=utcnow(),
        )
        if not recorded:
            return WebhookOutcome.DUPLICATE
        if warning:
            log.warning(warning)
        if changed is not None:
            await queries.set_payment(conn, changed)
        provider = events.EventSource.PAYMENT_PROVIDER
        if outcome is WebhookOutcome.REFUND_NEEDED:
            # A SUCCESS after the order was cancelled: the money must go back.
            await refunds.flag_refund_needed(conn, order)
            kind = events.EventKind.REFUND_NEEDED
            rows.append(await events.record_event(conn, order, kind, source=provider))
        elif outcome is WebhookOutcome.PROCESSED and event.status is ProviderStatus.SUCCESS:
            change = await orders.change_status(
                conn, order.id, OrderStatus.PAID, order.version, current=order
            )
            kind = events.EventKind.PAYMENT_SUCCEEDED
            rows += await orders.record_change(conn, change, kind=kind, source=provider)
        elif outcome is WebhookOutcome.PROCESSED and event.status is ProviderStatus.REFUNDED:
            _, refunded = await refunds.apply_refunded(conn, payment, order, source=provider)
            rows += refunded
        elif outcome is WebhookOutcome.PROCESSED and event.status is ProviderStatus.FAILED:
            kind = events.EventKind.PAYMENT_FAILED
            rows.append(await events.record_event(conn, order, kind, source=provider))
    await events.after_commit(services, rows, {order.user_id})
    return outcome


_Decision = tuple[WebhookOutcome, PaymentRow | None, str | None]


def _success(payment: PaymentRow, order: OrderRow) -> _Decision:
    """What a SUCCESS makes of the payment (and a warning worth logging); PROCESSED also
    pays the PENDING order."""
    previous = PaymentStatus(payment.status)
    if previous is PaymentStatus.SUCCEEDED:
        return WebhookOutcome.IGNORED, None, None
    if previous is PaymentStatus.REFUNDED:
        warning = f"payment {payment.id} reported SUCCESS after it was refunded; ignored"
        return WebhookOutcome.IGNORED, None, warning
    succeeded = replace(payment, status=PaymentStatus.SUCCEEDED.value, updated_at=utcnow())
    if OrderStatus(order.status) is not OrderStatus.PENDING:
        # Written SUCCEEDED, then flagged (refunds.flag_refund_needed) in the same
        # transaction.
        warning = f"payment {payment.id} succeeded but order {order.id} is {order.status}: "
        return WebhookOutcome.REFUND_NEEDED, succeeded, warning + "needs refund"
    if previous is PaymentStatus.FAILED:
        # The provider took the money after all: honour it rather than lose it.
        return (
            WebhookOutcome.PROCESSED,
            succeeded,
            f"payment {payment.id} reported SUCCESS after FAILED; applying it",
        )
    return WebhookOutcome.PROCESSED, succeeded, None


def _failure(payment: PaymentRow) -> _Decision:
    if PaymentStatus(payment.status) is not PaymentStatus.PENDING:
        # Never un-pay: a FAILED after SUCCESS is recorded in the inbox and goes no further.
        warning = f"payment {payment.id} reported FAILED while {payment.status}; ignored"
        return WebhookOutcome.IGNORED, None, warning
    failed = replace(payment, status=PaymentStatus.FAILED.value, updated_at=utcnow())
    return WebhookOutcome.PROCESSED, failed, None


def _refunded(payment: PaymentRow) -> _Decision:
    """What the provider's own REFUNDED makes of the payment: PROCESSED refunds a
    SUCCEEDED one (refunds.apply_refunded); anything else stays as it is."""
    previous = PaymentStatus(payment.status)
    if previous is PaymentStatus.SUCCEEDED:
        return WebhookOutcome.PROCESSED, None, None
    if previous is PaymentStatus.REFUNDED:
        return WebhookOutcome.IGNORED, None, None
    warning = f"payment {payment.id} reported REFUNDED while {payment.status}; ignored"
    return WebhookOutcome.IGNORED, None, warning


async def find_payment(services: Services, payment_id: str) -> tuple[PaymentRow, OrderRow] | None:
    """A payment and its order, for the simulated provider's page."""
    async with services.db.connect() as conn:
        payment = await queries.payment_by_id(conn, payment_id)
        if payment is None:
            return None
        order = await queries.order_by_id(conn, payment.order_id)
        return (payment, order) if order is not None else None


async def latest_payment(services: Services, order_id: int) -> PaymentRow | None:
    if orders.as_order_id(order_id) is None:
        return None
    async with services.db.connect() as conn:
        return await queries.latest_payment(conn, order_id)
