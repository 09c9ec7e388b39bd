"""The back office's reads and repairs (ADMIN only): figures per day, the payments the
provider never accepted (dead letters), and retrying them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from models import queries
from models.rows import DeadLetterRow, PaymentRow
from models.state import OrderStatus
from models.tables import DEAD_LETTER_REFUND, utcnow
from resolvers import events, orders, payments, refunds
from resolvers.context import RequestContext
from resolvers.errors import FieldErrors, NotFound, PaymentProviderUnavailable

MAX_STATS_DAYS = 366
MAX_DEAD_LETTER_LIMIT = 100


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    items: list[DeadLetterRow]
    total: int
    page: int
    limit: int

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.limit) if self.total else 0


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StatsPlan:
    """[start, end) as whole UTC days [first_day, end_day) read from the kept figures,
    and the partial days at either end (`head`, `tail`: empty ranges when there are none)
    read from the orders."""

    first_day: date
    end_day: date
    head: tuple[datetime, datetime]
    tail: tuple[datetime, datetime]


def stats_plan(start: datetime, end: datetime) -> StatsPlan:
    end_day = end.date()
    if start == _midnight(start.date()):
        first_day = start.date()
    elif start.date() < end_day:  # (then the next day exists: date.max is not before it)
        first_day = start.date() + timedelta(days=1)
    else:
        first_day = end_day
    if first_day >= end_day:  # no whole day inside: all of it from the orders
        return StatsPlan(first_day, first_day, (start, end), (end, end))
    return StatsPlan(first_day, end_day, (start, _midnight(first_day)), (_midnight(end_day), end))


async def order_stats(
    ctx: RequestContext, start: datetime, end: datetime
) -> list[queries.DayStats]:
    """Orders and their amounts per UTC day of creation and current status, for orders
    created in [start, end): one row per day and status with at least one order."""
    await ctx.require_admin()
    errors = FieldErrors()
    start_utc = orders.as_utc_input(start, "from", errors)
    end_utc = orders.as_utc_input(end, "to", errors)
    orders.check_range(start_utc, end_utc, ("from", "to"), errors)
    if start_utc and end_utc and end_utc - start_utc > timedelta(days=MAX_STATS_DAYS):
        errors.add("to", f"must be at most {MAX_STATS_DAYS} days after from")
    errors.raise_if_any()
    assert start_utc is not None and end_utc is not None
    plan = stats_plan(start_utc, end_utc)
    async with ctx.services.db.connect() as conn:
        rows = await queries.order_stats(
            conn, first_day=plan.first_day, end_day=plan.end_day, head=plan.head, tail=plan.tail
        )
    rank = {s.value: n for n, s in enumerate(OrderStatus)}
    return sorted(rows, key=lambda r: (r.day, rank.get(r.status, len(rank))))


async def dead_letters(ctx: RequestContext, *, page: int, limit: int) -> DeadLetterPage:
    await ctx.require_admin()
    errors = FieldErrors()
    if page < 1:
        errors.add("page", "must be 1 or more")
    if not 1 <= limit <= MAX_DEAD_LETTER_LIMIT:
        errors.add("limit", f"must be between 1 and {MAX_DEAD_LETTER_LIMIT}")
    errors.raise_if_any()
    async with ctx.services.db.connect() as conn:
        total, items = await queries.dead_letter_page(conn, limit=limit, offset=(page - 1) * limit)
    return DeadLetterPage(items=items, total=total, page=page, limit=limit)


async def retry_dead_letter(ctx: RequestContext, raw_id: str) -> PaymentRow:
    """Ask the provider again: for a payment, under initiatePayment's rules (the order
    must still be PENDING; a PENDING payment is answered as it is); for a refund, under
    refundPayment's. `retriedAt` is stamped when the provider was asked, whatever it said."""
    admin = await ctx.require_admin()
    letter_id = orders.as_order_id(raw_id)  # a whole number in the id column's range
    letter = None
    if letter_id is not None:
        async with ctx.services.db.connect() as conn:
            letter = await queries.dead_letter_by_id(conn, letter_id)
    if letter is None:
        raise NotFound("Dead letter not found.")
    try:
        if letter.kind == DEAD_LETTER_REFUND:
            payment = await refunds.refund(ctx, letter.payment_id, admin_id=admin.id)
        else:
            payment = await payments.initiate_payment(ctx, str(letter.order_id))
    except PaymentProviderUnavailable:
        await _stamp(ctx, letter.id)
        raise
    await _stamp(ctx, letter.id)
    return payment


async def _stamp(ctx: RequestContext, letter_id: int) -> None:
    async with ctx.services.db.begin() as conn:
        await queries.stamp_retried(conn, letter_id, utcnow())
    await events.after_commit(ctx.services, [], set())
