"""Refunds: a payment that must be given back, and giving it back once.

Two state changes, one function each, whoever causes them:
- `flag_refund_needed`: a SUCCEEDED payment of an order that will not ship (cancelling a
  PAID order, or a late SUCCESS after a cancel) is marked `needs_refund`;
- `apply_refunded`: a SUCCEEDED payment becomes REFUNDED (refundPayment once the provider
  accepted, or the provider's own REFUNDED webhook).

`refund_payment` asks the provider without holding a transaction: racing calls first claim
the refund (a conditional update of the payment row), so one of them asks the provider and
the others wait for its outcome. A claim left by a call that died is abandoned after the
provider's whole retry budget, and the provider's idempotency key (`refund-<payment id>`)
keeps a second ask from refunding twice.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from infra.provider import ProviderFailed, RefundRequest, backoff_cap
from models import queries
from models.rows import OrderRow, OutboxRow, PaymentRow
from models.sql import Connection
from models.state import PaymentStatus
from models.tables import DEAD_LETTER_REFUND, utcnow
from resolvers import events
from resolvers.context import RequestContext, Services
from resolvers.errors import InvalidTransition, NotFound, PaymentProviderUnavailable

log = logging.getLogger("order_service.refunds")

CURRENCY = "USD"
MAX_PAYMENT_ID = 64
# How often a call that lost the claim looks at the payment again.
WAIT_STEP_SECONDS = 0.05


async def flag_refund_needed(conn: Connection, order: OrderRow) -> list[PaymentRow]:
    """The order's SUCCEEDED payments now need a refund (`order`: as it is after the
    change that made it so); the payments this marked."""
    flagged = await queries.flag_refunds(conn, order.id, utcnow())
    for payment in flagged:
        log.info("payment %s of order %s needs a refund", payment.id, order.id)
    return flagged


async def apply_refunded(
    conn: Connection,
    payment: PaymentRow,
    order: OrderRow,
    *,
    source: events.EventSource,
    actor_id: int | None = None,
) -> tuple[PaymentRow | None, list[OutboxRow]]:
    """A SUCCEEDED payment becomes REFUNDED, needing no refund any more, and the order's
    history gains REFUNDED (last in the transaction: the log's lock); (None, []) when it
    was not SUCCEEDED (refunded already)."""
    refunded = await queries.mark_refunded(conn, payment.id, utcnow())
    if refunded is None:
        return None, []
    log.info("payment %s of order %s refunded", payment.id, order.id)
    row = await events.record_event(
        conn, order, events.EventKind.REFUNDED, source=source, actor_id=actor_id
    )
    return refunded, [row]


def claim_lease(services: Services) -> timedelta:
    """How long a claim holds: every attempt timing out, every backoff at its cap, and
    some slack. A claim older than this was left by a call that died."""
    provider = services.provider
    if provider is None:
        return timedelta(seconds=30)
    waits = sum(backoff_cap(n, provider.retry_base) for n in range(1, provider.max_attempts))
    return timedelta(seconds=provider.max_attempts * provider.timeout + waits + 5)


def _needs_no_refund(payment: PaymentRow) -> InvalidTransition:
    if payment.status == PaymentStatus.SUCCEEDED:
        why = "it needs no refund"
    else:
        why = f"it is {payment.status}"
    return InvalidTransition(f"Payment {payment.id} cannot be refunded: {why}.", [])


async def _read(services: Services, payment_id: str) -> tuple[PaymentRow, OrderRow]:
    async with services.db.connect() as conn:
        payment = await queries.payment_by_id(conn, payment_id)
        order = await queries.order_by_id(conn, payment.order_id) if payment else None
    if payment is None or order is None:
        raise NotFound("Payment not found.")
    return payment, order


async def refund_payment(ctx: RequestContext, raw_payment_id: str) -> PaymentRow:
    """Refund a SUCCEEDED payment that needs it (ADMIN). A REFUNDED payment is answered
    as it is: asking twice never refunds twice."""
    admin = await ctx.require_admin()
    payment_id = raw_payment_id.strip()
    if not 0 < len(payment_id) <= MAX_PAYMENT_ID:
        raise NotFound("Payment not found.")
    return await refund(ctx, payment_id, admin_id=admin.id)


async def refund(ctx: RequestContext, payment_id: str, *, admin_id: int) -> PaymentRow:
    """refundPayment after its access check (retryDeadLetter comes here too)."""
    services = ctx.services
    payment, order = await _read(services, payment_id)
    if payment.status == PaymentStatus.REFUNDED:
        return payment
    if payment.status != PaymentStatus.SUCCEEDED or not payment.needs_refund:
        raise _needs_no_refund(payment)
    started = utcnow()
    async with services.db.begin() as conn:
        claimed = await queries.claim_refund(
            conn, payment_id, started, started - claim_lease(services)
        )
    if claimed is None:
        return await _wait_for_other(services, payment_id)
    try:
        await _ask_provider(ctx, claimed)
    except ProviderFailed as exc:
        await _give_up(ctx, claimed, started, exc)
        raise PaymentProviderUnavailable() from None
    async with services.db.begin() as conn:
        # The order's row is locked first, as every other writer of its payments does.
        locked = await queries.order_by_id(conn, order.id, lock=True)
        refunded, rows = await apply_refunded(
            conn, claimed, locked or order, source=events.EventSource.ADMIN, actor_id=admin_id
        )
        if refunded is None:  # the provider's own webhook said REFUNDED meanwhile
            refunded = await queries.payment_by_id(conn, payment_id)
    await events.after_commit(services, rows, {order.user_id})
    assert refunded is not None
    return refunded


async def _ask_provider(ctx: RequestContext, payment: PaymentRow) -> None:
    provider = ctx.services.provider
    if provider is None:
        return  # the built-in simulated provider refunds at once
    await provider.refund(
        RefundRequest(
            payment_id=payment.id,
            provider_reference=payment.provider_reference,
            amount_cents=payment.amount_cents,
            currency=CURRENCY,
        )
    )


async def _give_up(
    ctx: RequestContext, payment: PaymentRow, started: datetime, exc: ProviderFailed
) -> None:
    """Release the claim (the next refundPayment may try again) and dead-letter it."""
    log.warning(
        "payment provider unavailable for the refund of payment %s after %d attempts: %s",
        payment.id,
        exc.attempts,
        exc.last_error,
        extra={"request_id": ctx.request_id},
    )
    services = ctx.services
    try:
        async with services.db.begin() as conn:
            await queries.release_refund(conn, payment.id, started)
            await queries.insert_dead_letter(
                conn,
                order_id=payment.order_id,
                payment_id=payment.id,
                attempts=exc.attempts,
                last_error=exc.last_error[:2000],
                now=utcnow(),
                kind=DEAD_LETTER_REFUND,
            )
        await events.after_commit(services, [], set())  # the dead letters changed
        services.metrics.dead_letters_written.inc()
    except Exception:
        log.exception("recording the failed refund of payment %s failed", payment.id)


async def _wait_for_other(services: Services, payment_id: str) -> PaymentRow:
    """Another call claimed this refund: its outcome, once it has one."""
    deadline = asyncio.get_running_loop().time() + claim_lease(services).total_seconds()
    while True:
        payment, _ = await _read(services, payment_id)
        if payment.status == PaymentStatus.REFUNDED:
            return payment
        if payment.status != PaymentStatus.SUCCEEDED or not payment.needs_refund:
            raise _needs_no_refund(payment)
        if payment.refund_started_at is None:
            # The other call gave up: the provider is unavailable (it dead-lettered it).
            raise PaymentProviderUnavailable()
        if asyncio.get_running_loop().time() >= deadline:
            raise PaymentProviderUnavailable()
        await asyncio.sleep(WAIT_STEP_SECONDS)
