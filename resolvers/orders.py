"""Orders: create (idempotent), read, list, and change status (optimistic locking)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from sqlalchemy import ColumnElement, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.dialect import insert_ignoring_conflict
from models.state import OrderStatus, Role, allowed_next, can_move
from models.tables import Order, OrderLine, Payment, Product, User, utcnow
from resolvers import events
from resolvers.context import RequestContext, Services
from resolvers.errors import (
    FieldErrors,
    IdempotencyKeyReused,
    InvalidTransition,
    NotFound,
    RateLimited,
    VersionConflict,
)

CLIENT_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")
MAX_LINES = 50
MAX_QTY = 1000
MAX_Q = 100
MAX_LIMIT = 100
# Ids and amounts are 32-bit integer columns: a bigger number would fail in the database
# (PostgreSQL refuses it) instead of being simply not found, or refused as input.
MAX_INT32 = 2**31 - 1
MAX_AMOUNT_CENTS = MAX_INT32
_ID_RE = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class ItemInput:
    sku: str
    qty: int


@dataclass(frozen=True, slots=True)
class Include:
    """Which children of an order the caller asked for."""

    lines: bool = True
    user: bool = True
    payment: bool = True


@dataclass(slots=True)
class OrderView:
    order: Order
    lines: list[OrderLine] = field(default_factory=list)
    user: User | None = None
    payment: Payment | None = None


@dataclass(frozen=True, slots=True)
class OrderPage:
    items: list[OrderView]
    total: int
    page: int
    limit: int

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.limit) if self.total else 0


def as_order_id(raw: str | int) -> int | None:
    """The id `raw` spells (ASCII digits, in the column's range), else None."""
    text = str(raw).strip()
    if not _ID_RE.fullmatch(text) or int(text) > MAX_INT32:
        return None
    return int(text)


def parse_order_id(raw: str | int) -> int:
    """IDs are opaque to clients: anything that is not one of ours is simply not found."""
    order_id = as_order_id(raw)
    if order_id is None:
        raise NotFound("Order not found.")
    return order_id


def _validate_items(items: Sequence[ItemInput], client_token: str) -> list[ItemInput]:
    errors = FieldErrors()
    if not CLIENT_TOKEN_RE.match(client_token):
        errors.add("clientToken", "must be 1 to 128 of A-Z a-z 0-9 _ - . :")
    if not 1 <= len(items) <= MAX_LINES:
        errors.add("items", f"must hold 1 to {MAX_LINES} lines")
    seen: set[str] = set()
    for i, item in enumerate(items):
        sku = item.sku.strip()
        if not sku:
            errors.add(f"items.{i}.sku", "must not be empty")
        elif sku in seen:
            errors.add(f"items.{i}.sku", f"{sku} appears more than once")
        seen.add(sku)
        if not 1 <= item.qty <= MAX_QTY:
            errors.add(f"items.{i}.qty", f"must be between 1 and {MAX_QTY}")
    errors.raise_if_any()
    return sorted((ItemInput(i.sku.strip(), i.qty) for i in items), key=lambda i: i.sku)


def fingerprint(items: Sequence[ItemInput]) -> str:
    normalised = [[i.sku, i.qty] for i in sorted(items, key=lambda i: i.sku)]
    return hashlib.sha256(orjson.dumps(normalised)).hexdigest()


async def _find_by_token(session: AsyncSession, user_id: int, token: str) -> Order | None:
    result = await session.execute(
        select(Order).where(col(Order.user_id) == user_id, col(Order.client_token) == token)
    )
    return result.scalar_one_or_none()


def _same_or_reused(existing: Order, items_fingerprint: str) -> Order:
    if existing.items_fingerprint != items_fingerprint:
        raise IdempotencyKeyReused()
    return existing


async def create_order(
    ctx: RequestContext, items: Sequence[ItemInput], client_token: str
) -> OrderView:
    user = await ctx.require_user()
    assert user.id is not None
    normalised = _validate_items(items, client_token)
    items_fingerprint = fingerprint(normalised)
    services = ctx.services

    # A repeat is answered without touching the rate limit: retrying costs nothing.
    async with services.db.read() as session:
        existing = await _find_by_token(session, user.id, client_token)
    if existing is not None:
        return await load_view(services, _same_or_reused(existing, items_fingerprint))

    created = False
    lines: list[OrderLine] = []
    async with services.db.transaction() as session:
        prices = await _prices(session, items)
        amount_cents = sum(prices[i.sku] * i.qty for i in normalised)
        if amount_cents > MAX_AMOUNT_CENTS:
            errors = FieldErrors()
            errors.add("items", f"the order's total must be at most {MAX_AMOUNT_CENTS} cents")
            errors.raise_if_any()
        now = utcnow()
        values = {
            "user_id": user.id,
            "status": OrderStatus.PENDING.value,
            "version": 1,
            "client_token": client_token,
            "items_fingerprint": items_fingerprint,
            "amount_cents": amount_cents,
            "created_at": now,
            "updated_at": now,
        }
        stmt = insert_ignoring_conflict(
            session, Order, values, ["user_id", "client_token"]
        ).returning(Order.id)
        order_id = (await session.execute(stmt)).scalar_one_or_none()
        if order_id is None:
            # A racing request with the same token committed first: answer with its order.
            winner = await _find_by_token(session, user.id, client_token)
            assert winner is not None
            order = _same_or_reused(winner, items_fingerprint)
        else:
            # Only a new order spends the budget; refusing here rolls the insert back, and
            # racing repeats of this token wait for this transaction instead of spending.
            await _spend_order_budget(ctx, user.id)
            created = True
            order = Order.model_validate({"id": order_id, **values})
            lines = [
                OrderLine(order_id=order_id, sku=i.sku, qty=i.qty, unit_price_cents=prices[i.sku])
                for i in normalised
            ]
            session.add_all(lines)
    if created:
        services.metrics.orders_created.inc()
        await events.after_commit(services, [], {user.id})
        # A new order's view is all in hand (its lines, its owner, no payment yet): reading
        # it back cost a session and three statements per createOrder.
        return OrderView(order=order, lines=lines, user=user)
    return await load_view(services, order)


async def _spend_order_budget(ctx: RequestContext, user_id: int) -> None:
    services = ctx.services
    retry_after = await services.limiter.hit(
        f"orders:user:{user_id}", ctx.settings.rate_limit_orders_per_minute
    )
    if retry_after is not None:
        services.metrics.rate_limited.labels("create_order").inc()
        raise RateLimited(retry_after, "Too many orders.")


async def _prices(session: AsyncSession, items: Sequence[ItemInput]) -> dict[str, int]:
    """Current prices of the items' SKUs; an unknown SKU is named by the client's index."""
    skus = [i.sku.strip() for i in items]
    result = await session.execute(
        select(col(Product.sku), col(Product.price_cents)).where(col(Product.sku).in_(skus))
    )
    prices: dict[str, int] = {sku: price for sku, price in result.all()}
    errors = FieldErrors()
    for i, sku in enumerate(skus):
        if sku not in prices:
            errors.add(f"items.{i}.sku", f"unknown SKU {sku}")
    errors.raise_if_any()
    return prices


async def load_view(services: Services, order: Order, include: Include = Include()) -> OrderView:
    async with services.db.read() as session:
        return (await load_details(session, [order], include))[0]


async def load_details(
    session: AsyncSession,
    orders: Sequence[Order],
    include: Include,
    *,
    known_users: Sequence[User] = (),
) -> list[OrderView]:
    """Children of a whole page in one statement per kind, never one per order.
    Owners among `known_users` (the caller, just read) are not read again."""
    views = [OrderView(order=o) for o in orders]
    if not views:
        return views
    by_id = {v.order.id: v for v in views}
    ids = list(by_id)
    if include.lines:
        result = await session.execute(
            select(OrderLine)
            .where(col(OrderLine.order_id).in_(ids))
            .order_by(col(OrderLine.order_id), col(OrderLine.id))
        )
        for line in result.scalars():
            by_id[line.order_id].lines.append(line)
    if include.user:
        users = {u.id: u for u in known_users}
        user_ids = {v.order.user_id for v in views} - users.keys()
        if user_ids:
            user_rows = await session.execute(select(User).where(col(User.id).in_(user_ids)))
            users.update((u.id, u) for u in user_rows.scalars())
        for v in views:
            v.user = users.get(v.order.user_id)
    if include.payment:
        payment_rows = await session.execute(
            select(Payment)
            .where(col(Payment.order_id).in_(ids))
            .order_by(col(Payment.order_id), col(Payment.created_at))
        )
        for payment in payment_rows.scalars():
            by_id[payment.order_id].payment = payment  # the last one wins: the latest
    return views


async def get_order(ctx: RequestContext, raw_id: str, include: Include = Include()) -> OrderView:
    user = await ctx.require_user()
    order_id = parse_order_id(raw_id)
    async with ctx.services.db.read() as session:
        order = await session.get(Order, order_id)
        if order is None or (user.role != Role.ADMIN and order.user_id != user.id):
            raise NotFound("Order not found.")
        return (await load_details(session, [order], include, known_users=[user]))[0]


def _like_pattern(q: str) -> str:
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_orders(
    ctx: RequestContext,
    *,
    status: OrderStatus | None,
    q: str | None,
    page: int,
    limit: int,
    include: Include = Include(),
) -> OrderPage:
    user = await ctx.require_user()
    errors = FieldErrors()
    if page < 1:
        errors.add("page", "must be 1 or more")
    if not 1 <= limit <= MAX_LIMIT:
        errors.add("limit", f"must be between 1 and {MAX_LIMIT}")
    if q is not None and len(q) > MAX_Q:
        errors.add("q", f"must be at most {MAX_Q} characters")
    errors.raise_if_any()

    is_admin = user.role == Role.ADMIN
    conditions: list[ColumnElement[bool]] = []
    if not is_admin:
        conditions.append(col(Order.user_id) == user.id)
    if status is not None:
        conditions.append(col(Order.status) == status.value)
    q = (q or "").strip()
    if q:
        pattern = _like_pattern(q)
        matches: list[ColumnElement[bool]] = [
            exists().where(
                col(OrderLine.order_id) == col(Order.id),
                func.lower(col(OrderLine.sku)).like(pattern, escape="\\"),
            )
        ]
        order_id = as_order_id(q.removeprefix("#"))
        if order_id is not None:
            matches.append(col(Order.id) == order_id)
        if is_admin:
            matches.append(
                col(Order.user_id).in_(
                    select(col(User.id)).where(
                        func.lower(col(User.email)).like(pattern, escape="\\")
                    )
                )
            )
        conditions.append(or_(*matches))

    async with ctx.services.db.read() as session:
        total = (
            await session.execute(select(func.count()).select_from(Order).where(*conditions))
        ).scalar_one()
        result = await session.execute(
            select(Order)
            .where(*conditions)
            .order_by(col(Order.created_at).desc(), col(Order.id).desc())
            .limit(limit)
            .offset((page - 1) * limit)
        )
        views = await load_details(session, list(result.scalars()), include, known_users=[user])
    return OrderPage(items=views, total=int(total), page=page, limit=limit)


async def change_status(
    session: AsyncSession,
    order_id: int,
    target: OrderStatus,
    expected_version: int,
) -> tuple[Order, events.StatusEvent]:
    """The one path for every status change: version check, transition rule, version
    bump and the outbox event, all in the caller's transaction."""
    order = await session.get(Order, order_id, populate_existing=True)
    if order is None:
        raise NotFound("Order not found.")
    if order.version != expected_version:
        raise VersionConflict(order.version)
    current = OrderStatus(order.status)
    if not can_move(current, target):
        allowed = [s.value for s in allowed_next(current)]
        raise InvalidTransition(
            f"An order that is {current.value} cannot become {target.value}.", allowed
        )
    now = utcnow()
    result = await session.execute(
        update(Order)
        .where(col(Order.id) == order_id, col(Order.version) == expected_version)
        .values(status=target.value, version=col(Order.version) + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        # Someone else moved it between our read and our write.
        fresh = await session.get(Order, order_id, populate_existing=True)
        raise VersionConflict(fresh.version if fresh else expected_version + 1)
    # Detach before mirroring the UPDATE so the session does not write it a second time.
    session.expunge(order)
    order.status, order.version, order.updated_at = target.value, expected_version + 1, now
    event = events.StatusEvent(
        order_id=order_id,
        user_id=order.user_id,
        status=target.value,
        previous_status=current.value,
        version=order.version,
        changed_at=now,
    )
    return order, event


async def update_order_status(
    ctx: RequestContext, raw_id: str, target: OrderStatus, version: int
) -> OrderView:
    await ctx.require_admin()
    order_id = parse_order_id(raw_id)
    async with ctx.services.db.transaction() as session:
        order, event = await change_status(session, order_id, target, version)
        row = await events.record(session, event)
    await events.after_commit(ctx.services, [row], {order.user_id})
    return await load_view(ctx.services, order)
