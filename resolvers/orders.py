"""Orders: create (idempotent), read, list, and change status (optimistic locking)."""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from infra import tracing
from models import queries
from models.rows import LineRow, OrderRow, OutboxRow, PaymentRow, UserRow
from models.sql import Connection
from models.state import OrderSort, OrderStatus, Role, allowed_next, can_move
from models.tables import utcnow
from resolvers import events, refunds
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
_DIGITS = re.compile(r"[0-9]{1,18}")
_MAX_NUMBER = 10**18


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
    order: OrderRow
    lines: list[LineRow] = field(default_factory=list)
    user: UserRow | None = None
    payment: PaymentRow | None = None


@dataclass(frozen=True, slots=True)
class OrderPage:
    items: list[OrderView]
    total: int
    page: int
    limit: int
    next_cursor: str | None = None
    total_is_exact: bool = True

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.limit) if self.total else 0


def whole_number(raw: str | int) -> int | None:
    """The whole number `raw` is (0 to 10**18 - 1), or spells in ASCII digits (no sign,
    no space, no other script's digits); else None. What an id sent by a client or the
    payment provider can be read as."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 <= raw < _MAX_NUMBER else None
    return int(raw) if _DIGITS.fullmatch(raw) else None


def as_order_id(raw: str | int) -> int | None:
    """The order id `raw` names (a whole number in the column's range; a string may have
    spaces around it), else None: no order has it."""
    number = whole_number(raw.strip() if isinstance(raw, str) else raw)
    return number if number is not None and number <= MAX_INT32 else None


def parse_order_id(raw: str | int) -> int:
    """IDs are opaque to clients: anything that is not one of ours is simply not found."""
    order_id = as_order_id(raw)
    if order_id is None:
        raise NotFound("Order not found.")
    return order_id


def may_see(user: UserRow, owner_id: int) -> bool:
    """Who may see an order, its payment and its status events: its owner, or an admin."""
    return user.role == Role.ADMIN or user.id == owner_id


async def visible_order(
    conn: Connection, user: UserRow, order_id: int, *, lock: bool = False
) -> OrderRow:
    """The order if `user` may see it; NotFound if it does not exist or they may not
    (the two are not told apart)."""
    order = await queries.order_by_id(conn, order_id, lock=lock)
    if order is None or not may_see(user, order.user_id):
        raise NotFound("Order not found.")
    return order


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


def _same_or_reused(existing: OrderRow, items_fingerprint: str) -> OrderRow:
    if existing.items_fingerprint != items_fingerprint:
        raise IdempotencyKeyReused()
    return existing


@tracing.use_case("orders.create")
async def create_order(
    ctx: RequestContext,
    items: Sequence[ItemInput],
    client_token: str,
    include: Include = Include(),
) -> OrderView:
    """A new PENDING order, or the one this user made before with the same token.

    The insert decides: `INSERT ... ON CONFLICT DO NOTHING` on (user, token) makes racing
    repeats wait for the first and then find its order, so the database settles races.
    A repeat spends no rate-limit budget; only a new order does.
    """
    user = await ctx.require_user()
    normalised = _validate_items(items, client_token)
    items_fingerprint = fingerprint(normalised)
    services = ctx.services
    async with services.db.begin() as conn:
        prices = await _prices(conn, items)
        amount_cents = sum(prices[i.sku] * i.qty for i in normalised)
        if amount_cents > MAX_AMOUNT_CENTS:
            errors = FieldErrors()
            errors.add("items", f"the order's total must be at most {MAX_AMOUNT_CENTS} cents")
            errors.raise_if_any()
        order = await queries.insert_order(
            conn,
            user_id=user.id,
            status=OrderStatus.PENDING.value,
            client_token=client_token,
            items_fingerprint=items_fingerprint,
            amount_cents=amount_cents,
            now=utcnow(),
        )
        if order is None:
            # Made before, or by a racing request that committed first: answer with it.
            winner = await queries.order_by_token(conn, user.id, client_token)
            assert winner is not None
            existing = _same_or_reused(winner, items_fingerprint)
            return (await load_details(conn, [existing], include, known_users=[user]))[0]
        # Refusing here rolls the insert back; racing repeats of this token wait for
        # this transaction instead of spending.
        await _spend_order_budget(ctx, user.id)
        new_lines = [queries.NewLine(i.sku, i.qty, prices[i.sku]) for i in normalised]
        lines = await queries.insert_lines(conn, order.id, new_lines)
        created = await events.record_event(
            conn,
            order,
            events.EventKind.CREATED,
            source=events.source_of(user),
            actor_id=user.id,
        )
    services.metrics.orders_created.inc()
    await events.after_commit(services, [created], {user.id})
    # A new order's view is all in hand: its lines, its owner, no payment yet.
    return OrderView(order=order, lines=lines, user=user)


async def _spend_order_budget(ctx: RequestContext, user_id: int) -> None:
    services = ctx.services
    retry_after = await services.limiter.hit(
        f"orders:user:{user_id}", ctx.settings.rate_limit_orders_per_minute
    )
    if retry_after is not None:
        services.metrics.rate_limited.labels("create_order").inc()
        raise RateLimited(retry_after, "Too many orders.")


async def _prices(conn: Connection, items: Sequence[ItemInput]) -> dict[str, int]:
    """Current prices of the items' SKUs; an unknown SKU is named by the client's index."""
    skus = [i.sku.strip() for i in items]
    prices = await queries.prices(conn, skus)
    errors = FieldErrors()
    for i, sku in enumerate(skus):
        if sku not in prices:
            errors.add(f"items.{i}.sku", f"unknown SKU {sku}")
    errors.raise_if_any()
    return prices


async def load_view(services: Services, order: OrderRow, include: Include = Include()) -> OrderView:
    if not (include.lines or include.user or include.payment):
        return OrderView(order=order)
    async with services.db.connect() as conn:
        return (await load_details(conn, [order], include))[0]


async def load_details(
    conn: Connection,
    orders: Sequence[OrderRow],
    include: Include,
    *,
    known_users: Sequence[UserRow] = (),
) -> list[OrderView]:
    """Children of a whole page in one statement per kind, never one per order.
    Owners among `known_users` (the caller, just read) are not read again."""
    views = [OrderView(order=o) for o in orders]
    if not views:
        return views
    by_id = {v.order.id: v for v in views}
    ids = list(by_id)
    if include.lines:
        for line in await queries.lines_of(conn, ids):
            by_id[line.order_id].lines.append(line)
    if include.user:
        users = {u.id: u for u in known_users}
        missing = {v.order.user_id for v in views} - users.keys()
        if missing:
            users.update((u.id, u) for u in await queries.users_by_ids(conn, sorted(missing)))
        for v in views:
            v.user = users.get(v.order.user_id)
    if include.payment:
        await _attach_payments(conn, by_id)
    return views


async def _attach_payments(conn: Connection, views: dict[int, OrderView]) -> None:
    """Each order's latest payment, for a whole page in one statement."""
    for payment in await queries.payments_of(conn, list(views)):
        views[payment.order_id].payment = payment  # oldest first: the last one wins


@tracing.use_case("orders.get")
async def get_order(ctx: RequestContext, raw_id: str, include: Include = Include()) -> OrderView:
    user = await ctx.require_user()
    order_id = parse_order_id(raw_id)
    async with ctx.services.db.connect() as conn:
        order = await visible_order(conn, user, order_id)
        return (await load_details(conn, [order], include, known_users=[user]))[0]


# A `q` that is a whole email: one @, a dot in the domain, no spaces.
_WHOLE_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _like_pattern(q: str) -> str:
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def as_utc_input(value: datetime | None, field: str, errors: FieldErrors) -> datetime | None:
    """A client's timestamp as aware UTC (one without an offset is taken as UTC); a value
    that has no UTC equivalent (year 1 with a positive offset, say) is an input error."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        errors.add(field, "is out of range")
        return None


def check_range(
    start: datetime | None, end: datetime | None, fields: tuple[str, str], errors: FieldErrors
) -> None:
    if start is not None and end is not None and end < start:
        errors.add(fields[1], f"must not be before {fields[0]}")


def _filter_digest(where: queries.OrderFilter) -> str:
    """What a cursor was made for: the filter (the caller's scope included) and sort."""
    spelled = [
        where.user_id,
        where.status,
        where.pattern,
        where.order_id,
        where.match_emails,
        where.created_from.isoformat() if where.created_from else None,
        where.created_to.isoformat() if where.created_to else None,
        where.sort,
    ]
    return hashlib.sha256(orjson.dumps(spelled)).hexdigest()[:16]


def encode_cursor(where: queries.OrderFilter, order: OrderRow) -> str:
    """An opaque cursor: the order's sort key and id, and the digest of the filter."""
    key = queries.sort_key(order, OrderSort(where.sort))
    spelled = key.isoformat() if isinstance(key, datetime) else key
    raw = orjson.dumps([spelled, order.id, _filter_digest(where)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(
    where: queries.OrderFilter, cursor: str, errors: FieldErrors
) -> queries.Keyset | None:
    """The keyset a cursor names; an input error (`after`) when it is not one of ours or
    was made for another filter or sort."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key, order_id, digest = orjson.loads(raw)
    except (ValueError, TypeError):  # bad base64, bad JSON, not three items
        errors.add("after", "is not a cursor of this list")
        return None
    if digest != _filter_digest(where):
        errors.add("after", "was given for another filter or sort: start from page 1")
        return None
    by_amount = queries.SORT_KEYS[OrderSort(where.sort)][0] == "amount_cents"
    if (
        not isinstance(order_id, int)
        or isinstance(order_id, bool)
        or as_order_id(order_id) is None
        or (by_amount and (not isinstance(key, int) or isinstance(key, bool)))
        or (by_amount and not -MAX_INT32 <= key <= MAX_INT32)
        or (not by_amount and not isinstance(key, str))
    ):
        errors.add("after", "is not a cursor of this list")
        return None
    if by_amount:
        return queries.Keyset(key=key, id=order_id)
    try:
        at = datetime.fromisoformat(key)
    except ValueError:
        errors.add("after", "is not a cursor of this list")
        return None
    if at.tzinfo is None:
        errors.add("after", "is not a cursor of this list")
        return None
    return queries.Keyset(key=at.astimezone(UTC), id=order_id)


@tracing.use_case("orders.list")
async def list_orders(
    ctx: RequestContext,
    *,
    status: OrderStatus | None,
    q: str | None,
    page: int,
    limit: int,
    include: Include = Include(),
    sort: OrderSort = OrderSort.NEWEST,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    after: str | None = None,
) -> OrderPage:
    """A page of orders. `after` (a `next_cursor` of an earlier page of the same filter
    and sort) starts the page right after that order, at any depth for the cost of page
    1 (`page` is then ignored)."""
    user = await ctx.require_user()
    errors = FieldErrors()
    if page < 1 and after is None:
        errors.add("page", "must be 1 or more")
    if not 1 <= limit <= MAX_LIMIT:
        errors.add("limit", f"must be between 1 and {MAX_LIMIT}")
    if q is not None and len(q) > MAX_Q:
        errors.add("q", f"must be at most {MAX_Q} characters")
    created_from = as_utc_input(created_from, "createdFrom", errors)
    created_to = as_utc_input(created_to, "createdTo", errors)
    check_range(created_from, created_to, ("createdFrom", "createdTo"), errors)
    errors.raise_if_any()

    is_admin = user.role == Role.ADMIN
    q = (q or "").strip()
    where = queries.OrderFilter(
        user_id=None if is_admin else user.id,
        status=status.value if status is not None else None,
        pattern=_like_pattern(q) if q else None,
        order_id=as_order_id(q.removeprefix("#")) if q else None,
        match_emails=is_admin and bool(q),
        email=q.lower() if is_admin and _WHOLE_EMAIL.fullmatch(q) else None,
        created_from=created_from,
        created_to=created_to,
        sort=OrderSort(sort).value,
    )
    keyset = decode_cursor(where, after, errors) if after is not None else None
    errors.raise_if_any()
    # A USER's orders are all the caller's own: no owner to read.
    with_owners = include.user and is_admin
    async with ctx.services.db.connect() as conn:
        read = await queries.read_page(
            conn,
            where,
            limit=limit,
            offset=0 if keyset is not None else (page - 1) * limit,
            with_lines=include.lines,
            with_owners=with_owners,
            after=keyset,
        )
        views = [OrderView(order=o) for o in read.orders]
        by_id = {v.order.id: v for v in views}
        for line in read.lines:
            by_id[line.order_id].lines.append(line)
        if include.user:
            owners = {u.id: u for u in (*read.owners, user)}
            for v in views:
                v.user = owners.get(v.order.user_id)
        if include.payment and views:
            await _attach_payments(conn, by_id)
    next_cursor = encode_cursor(where, read.orders[-1]) if read.more else None
    return OrderPage(
        items=views,
        total=read.total,
        page=page,
        limit=limit,
        next_cursor=next_cursor,
        total_is_exact=read.exact,
    )


@dataclass(frozen=True, slots=True)
class StatusChange:
    order: OrderRow  # as it is after the change
    event: events.StatusEvent  # a STATUS_CHANGED by the system until the caller says who
    refund_needed: bool  # a PAID order cancelled: its payment was flagged for a refund


async def change_status(
    conn: Connection,
    order_id: int,
    target: OrderStatus,
    expected_version: int,
    *,
    current: OrderRow | None = None,
) -> StatusChange:
    """The one path for every status change: version check, transition rule and version
    bump, in the caller's transaction (`current`: the order as the caller already read it
    in that transaction). The caller writes the change's events with `record_change`,
    last in the transaction."""
    order = current or await queries.order_by_id(conn, order_id)
    if order is None:
        raise NotFound("Order not found.")
    if order.version != expected_version:
        raise VersionConflict(order.version)
    previous = OrderStatus(order.status)
    if not can_move(previous, target):
        allowed = [s.value for s in allowed_next(previous)]
        raise InvalidTransition(
            f"An order that is {previous.value} cannot become {target.value}.", allowed
        )
    moved = await queries.move_order(conn, order_id, target.value, expected_version, utcnow())
    if moved is None:
        # Someone else moved it between our read and our write.
        fresh = await queries.order_by_id(conn, order_id)
        raise VersionConflict(fresh.version if fresh else expected_version + 1)
    flagged = []
    if previous is OrderStatus.PAID and target is OrderStatus.CANCELLED:
        # The customer paid for an order that will not ship: its payment must go back.
        flagged = await refunds.flag_refund_needed(conn, moved)
    event = events.StatusEvent(
        order_id=order_id,
        user_id=order.user_id,
        status=target.value,
        previous_status=previous.value,
        version=moved.version,
        changed_at=moved.updated_at,
    )
    return StatusChange(moved, event, refund_needed=bool(flagged))


async def record_change(
    conn: Connection,
    change: StatusChange,
    *,
    kind: events.EventKind | None = None,
    source: events.EventSource | None = None,
    actor_id: int | None = None,
) -> list[OutboxRow]:
    """The change's event (`kind`, `source`, `actor_id` as `events.record` takes them),
    then, when it flagged a payment for a refund, the system's REFUND_NEEDED: the rows
    to hand to `events.after_commit`. Last in the transaction (the log's lock)."""
    rows = [await events.record(conn, change.event, kind=kind, source=source, actor_id=actor_id)]
    if change.refund_needed:
        rows.append(
            await events.record_event(
                conn,
                change.order,
                events.EventKind.REFUND_NEEDED,
                source=events.EventSource.SYSTEM,
            )
        )
    return rows


@tracing.use_case("orders.update_status")
async def update_order_status(
    ctx: RequestContext,
    raw_id: str,
    target: OrderStatus,
    version: int,
    include: Include = Include(),
) -> OrderView:
    admin = await ctx.require_admin()
    order_id = parse_order_id(raw_id)
    async with ctx.services.db.begin() as conn:
        change = await change_status(conn, order_id, target, version)
        rows = await record_change(conn, change, source=events.EventSource.ADMIN, actor_id=admin.id)
    await events.after_commit(ctx.services, rows, {change.order.user_id})
    return await load_view(ctx.services, change.order, include)
