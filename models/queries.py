"""The statements of the request paths, one function each, on a `models.sql` connection.

Use cases (resolvers/) own the connection and the transaction; these functions only say
what to read or write and turn rows into `models.rows`. Every statement text is fixed (or
one of a few shapes, for the order filters), so asyncpg prepares each once per connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from models.rows import (
    LINE_COLUMNS,
    ORDER_COLUMNS,
    OUTBOX_COLUMNS,
    PAYMENT_COLUMNS,
    PRODUCT_COLUMNS,
    USER_COLUMNS,
    LineRow,
    OrderRow,
    OutboxRow,
    PaymentRow,
    ProductRow,
    UserRow,
)
from models.sql import Connection, Statement

# -- users -------------------------------------------------------------------------------

USER_BY_ID = Statement(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1")
_USERS_BY_IDS = Statement(f"SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1::int[])")


_USER_BY_EMAIL = Statement(
    f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE lower(email) = $1"
)
_INSERT_USER = Statement(
    "INSERT INTO users (email, password_hash, role, created_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (email) DO NOTHING RETURNING id"
)
_SET_ROLE = Statement("UPDATE users SET role = $2 WHERE id = $1")


async def user_by_id(conn: Connection, user_id: int) -> UserRow | None:
    row = await conn.fetchrow(USER_BY_ID, user_id)
    return UserRow.of(row) if row is not None else None


async def users_by_ids(conn: Connection, user_ids: Sequence[int]) -> list[UserRow]:
    return [UserRow.of(r) for r in await conn.fetch(_USERS_BY_IDS, list(user_ids))]


async def user_by_email(conn: Connection, email: str) -> tuple[UserRow, str] | None:
    """The user with this (lower-cased) email and its password hash, for logins."""
    row = await conn.fetchrow(_USER_BY_EMAIL, email)
    return (UserRow.of(row), row[4]) if row is not None else None


async def insert_user(
    conn: Connection, *, email: str, password_hash: str, role: str, now: datetime
) -> UserRow | None:
    """The new user; None when the email is taken."""
    user_id = await conn.fetchval(_INSERT_USER, email, password_hash, role, now)
    return UserRow(user_id, email, role, now) if user_id is not None else None


async def set_role(conn: Connection, user_id: int, role: str) -> None:
    await conn.execute(_SET_ROLE, user_id, role)


# -- catalog -----------------------------------------------------------------------------

_PRODUCTS = Statement(f"SELECT {PRODUCT_COLUMNS} FROM products ORDER BY sku")
_UPSERT_PRODUCT = Statement(
    "INSERT INTO products (sku, name, price_cents, updated_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (sku) DO UPDATE SET name = excluded.name, "
    "price_cents = excluded.price_cents, updated_at = excluded.updated_at"
)


async def products(conn: Connection) -> list[ProductRow]:
    return [ProductRow.of(r) for r in await conn.fetch(_PRODUCTS)]


async def upsert_product(conn: Connection, product: ProductRow) -> None:
    await conn.execute(
        _UPSERT_PRODUCT, product.sku, product.name, product.price_cents, product.updated_at
    )


# -- orders ------------------------------------------------------------------------------

_ORDER_BY_ID = Statement(f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1")
_ORDER_BY_ID_LOCKED = Statement(f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE")
_ORDER_BY_TOKEN = Statement(
    f"SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND client_token = $2"
)
_INSERT_ORDER = Statement(
    "INSERT INTO orders (user_id, status, version, client_token, items_fingerprint, "
    "amount_cents, created_at, updated_at) VALUES ($1, $2, 1, $3, $4, $5, $6, $6) "
    "ON CONFLICT (user_id, client_token) DO NOTHING RETURNING id"
)
_INSERT_LINES = Statement(
    "INSERT INTO order_lines (order_id, sku, qty, unit_price_cents) "
    "SELECT $1, sku, qty, price "
    "FROM unnest($2::text[], $3::int[], $4::int[]) WITH ORDINALITY AS l(sku, qty, price, n) "
    "ORDER BY n",
    sqlite="INSERT INTO order_lines (order_id, sku, qty, unit_price_cents) "
    "SELECT ?1, s.value, q.value, p.value FROM json_each(?2) AS s "
    "JOIN json_each(?3) AS q ON q.key = s.key JOIN json_each(?4) AS p ON p.key = s.key "
    "ORDER BY s.key",
)
_LINES_OF = Statement(
    f"SELECT {LINE_COLUMNS} FROM order_lines WHERE order_id = ANY($1::int[]) ORDER BY order_id, id"
)
_PRICES = Statement("SELECT sku, price_cents FROM products WHERE sku = ANY($1::text[])")
_MOVE_ORDER = Statement(
    "UPDATE orders SET status = $1, version = version + 1, updated_at = $2 "
    "WHERE id = $3 AND version = $4"
)


async def order_by_id(conn: Connection, order_id: int, *, lock: bool = False) -> OrderRow | None:
    row = await conn.fetchrow(_ORDER_BY_ID_LOCKED if lock else _ORDER_BY_ID, order_id)
    return OrderRow.of(row) if row is not None else None


async def order_by_token(conn: Connection, user_id: int, client_token: str) -> OrderRow | None:
    row = await conn.fetchrow(_ORDER_BY_TOKEN, user_id, client_token)
    return OrderRow.of(row) if row is not None else None


async def prices(conn: Connection, skus: Sequence[str]) -> dict[str, int]:
    return {r[0]: r[1] for r in await conn.fetch(_PRICES, list(skus))}


async def insert_order(
    conn: Connection,
    *,
    user_id: int,
    status: str,
    client_token: str,
    items_fingerprint: str,
    amount_cents: int,
    now: datetime,
) -> int | None:
    """The new order's id; None when the user already has an order with this token."""
    order_id: int | None = await conn.fetchval(
        _INSERT_ORDER, user_id, status, client_token, items_fingerprint, amount_cents, now
    )
    return order_id


async def insert_lines(conn: Connection, order_id: int, lines: Sequence[LineRow]) -> None:
    """All of an order's lines in one statement, in the given order."""
    await conn.execute(
        _INSERT_LINES,
        order_id,
        [line.sku for line in lines],
        [line.qty for line in lines],
        [line.unit_price_cents for line in lines],
    )


async def lines_of(conn: Connection, order_ids: Sequence[int]) -> list[LineRow]:
    return [LineRow.of(r) for r in await conn.fetch(_LINES_OF, list(order_ids))]


async def move_order(
    conn: Connection, order_id: int, status: str, expected_version: int, now: datetime
) -> bool:
    """Optimistic locking: True when the order was at `expected_version` (and now is not)."""
    return await conn.execute(_MOVE_ORDER, status, now, order_id, expected_version) == 1


@dataclass(frozen=True, slots=True)
class OrderFilter:
    """Which orders a listing covers. `pattern` is a LIKE pattern for `q` (lower case,
    escaped with backslashes); it matches a SKU of the order, or with `match_emails` the
    owner's email; `order_id` is the order `q` names, if it names one."""

    user_id: int | None = None
    status: str | None = None
    pattern: str | None = None
    order_id: int | None = None
    match_emails: bool = False

    def shape(self) -> tuple[bool, bool, bool, bool, bool]:
        return (
            self.user_id is not None,
            self.status is not None,
            self.pattern is not None,
            self.order_id is not None,
            self.match_emails,
        )

    def args(self) -> list[object]:
        values: list[object] = []
        if self.user_id is not None:
            values.append(self.user_id)
        if self.status is not None:
            values.append(self.status)
        if self.pattern is not None:
            values.append(self.pattern)
            if self.order_id is not None:
                values.append(self.order_id)
        return values


@lru_cache(maxsize=64)
def _where(shape: tuple[bool, bool, bool, bool, bool]) -> tuple[str, int]:
    """The WHERE clause of a filter shape, and how many parameters it takes."""
    by_user, by_status, by_q, by_id, by_email = shape
    conditions: list[str] = []
    n = 0
    if by_user:
        n += 1
        conditions.append(f"o.user_id = ${n}")
    if by_status:
        n += 1
        conditions.append(f"o.status = ${n}")
    if by_q:
        n += 1
        pattern = n
        matches = [
            "EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = o.id "
            f"AND lower(l.sku) LIKE ${pattern} ESCAPE '\\')"
        ]
        if by_id:
            n += 1
            matches.append(f"o.id = ${n}")
        if by_email:
            matches.append(
                "o.user_id IN (SELECT u.id FROM users u "
                f"WHERE lower(u.email) LIKE ${pattern} ESCAPE '\\')"
            )
        conditions.append("(" + " OR ".join(matches) + ")")
    return (" WHERE " + " AND ".join(conditions)) if conditions else "", n


@dataclass(slots=True)
class PageRead:
    """A page of orders with what came along in the same statement."""

    total: int
    orders: list[OrderRow]
    lines: list[LineRow]
    owners: list[UserRow]


def _prefixed(columns: str, alias: str) -> list[str]:
    return [f"{alias}.{c.strip()}" for c in columns.split(",")]


def page_statement(where: OrderFilter, *, with_lines: bool, with_owners: bool) -> Statement:
    """The statement `read_page` runs for this filter (its arguments: `where.args()`,
    then the limit and the offset)."""
    return _page_read_statement(where.shape(), with_lines, with_owners)


@lru_cache(maxsize=128)
def _page_read_statement(
    shape: tuple[bool, bool, bool, bool, bool], with_lines: bool, with_owners: bool
) -> Statement:
    where, n = _where(shape)
    order_columns = _prefixed(ORDER_COLUMNS, "o")
    columns = ["t.total", *_prefixed(ORDER_COLUMNS, "p")]
    joins = ""
    if with_lines:
        columns += _prefixed(LINE_COLUMNS, "l")
        joins += " LEFT JOIN order_lines l ON l.order_id = p.id"
    if with_owners:
        columns += _prefixed(USER_COLUMNS, "u")
        joins += " LEFT JOIN users u ON u.id = p.user_id"
    order_by = "p.created_at DESC, p.id DESC" + (", l.id" if with_lines else "")
    return Statement(
        f"SELECT {', '.join(columns)} "
        f"FROM (SELECT count(*) AS total FROM orders o{where}) t "
        f"LEFT JOIN (SELECT {', '.join(order_columns)} FROM orders o{where} "
        f"ORDER BY o.created_at DESC, o.id DESC LIMIT ${n + 1} OFFSET ${n + 2}) p ON 1 = 1"
        f"{joins} ORDER BY {order_by}"
    )


async def read_page(
    conn: Connection,
    where: OrderFilter,
    *,
    limit: int,
    offset: int,
    with_lines: bool,
    with_owners: bool,
) -> PageRead:
    """The count, a page (newest first, ties broken by id so pages never overlap) and,
    if asked, the page's lines and owners: one statement, one round trip, where the
    four reads cost four."""
    stmt = page_statement(where, with_lines=with_lines, with_owners=with_owners)
    rows = await conn.fetch(stmt, *where.args(), limit, offset)
    read = PageRead(total=int(rows[0][0]) if rows else 0, orders=[], lines=[], owners=[])
    seen_orders: set[int] = set()
    seen_owners: set[int] = set()
    line_at = 10
    owner_at = line_at + (5 if with_lines else 0)
    for row in rows:
        if row[1] is None:  # no orders on this page: the count's row alone
            continue
        if row[1] not in seen_orders:
            seen_orders.add(row[1])
            read.orders.append(OrderRow.of(row[1:10]))
        if with_lines and row[line_at] is not None:
            read.lines.append(LineRow.of(row[line_at : line_at + 5]))
        if with_owners and row[owner_at] is not None and row[owner_at] not in seen_owners:
            seen_owners.add(row[owner_at])
            read.owners.append(UserRow.of(row[owner_at : owner_at + 4]))
    return read


# -- payments and webhooks ---------------------------------------------------------------

_PAYMENTS_OF = Statement(
    f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = ANY($1::int[]) "
    "ORDER BY order_id, created_at"
)
_PAYMENT_BY_ID = Statement(f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1")
_PAYMENT_BY_ID_LOCKED = Statement(
    f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1 FOR UPDATE"
)
_SET_PAYMENT = Statement(
    "UPDATE payments SET status = $2, needs_refund = $3, updated_at = $4 WHERE id = $1"
)
_INSERT_DELIVERY = Statement(
    "INSERT INTO webhook_inbox (delivery_key, payment_id, status, outcome, received_at) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (delivery_key) DO NOTHING RETURNING delivery_key"
)


async def payments_of(conn: Connection, order_ids: Sequence[int]) -> list[PaymentRow]:
    """Oldest first within each order."""
    return [PaymentRow.of(r) for r in await conn.fetch(_PAYMENTS_OF, list(order_ids))]


async def payment_by_id(
    conn: Connection, payment_id: str, *, lock: bool = False
) -> PaymentRow | None:
    row = await conn.fetchrow(_PAYMENT_BY_ID_LOCKED if lock else _PAYMENT_BY_ID, payment_id)
    return PaymentRow.of(row) if row is not None else None


async def set_payment(conn: Connection, payment: PaymentRow) -> None:
    """Write a payment's status, refund flag and updated_at."""
    await conn.execute(
        _SET_PAYMENT, payment.id, payment.status, payment.needs_refund, payment.updated_at
    )


async def record_delivery(
    conn: Connection,
    *,
    delivery_key: str,
    payment_id: str,
    status: str,
    outcome: str,
    now: datetime,
) -> bool:
    """The webhook inbox: False when this delivery was recorded before (a replay)."""
    key = await conn.fetchval(_INSERT_DELIVERY, delivery_key, payment_id, status, outcome, now)
    return key is not None


_PENDING_PAYMENT = Statement(
    f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND status = 'PENDING'"
)
_LATEST_PAYMENT = Statement(
    f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 ORDER BY created_at DESC LIMIT 1"
)
# At most one PENDING payment per order is the partial unique index
# uq_payments_order_pending: a racing second insert does nothing.
_INSERT_PENDING_PAYMENT = Statement(
    "INSERT INTO payments (id, order_id, amount_cents, status, redirect_url, "
    "provider_reference, needs_refund, created_at, updated_at) "
    "VALUES ($1, $2, $3, 'PENDING', $4, $5, $6, $7, $7) "
    "ON CONFLICT (order_id) WHERE status = 'PENDING' DO NOTHING RETURNING id"
)
_INSERT_DEAD_LETTER = Statement(
    "INSERT INTO payment_dead_letters (order_id, payment_id, attempts, last_error, created_at) "
    "VALUES ($1, $2, $3, $4, $5)"
)


async def pending_payment(conn: Connection, order_id: int) -> PaymentRow | None:
    row = await conn.fetchrow(_PENDING_PAYMENT, order_id)
    return PaymentRow.of(row) if row is not None else None


async def latest_payment(conn: Connection, order_id: int) -> PaymentRow | None:
    row = await conn.fetchrow(_LATEST_PAYMENT, order_id)
    return PaymentRow.of(row) if row is not None else None


async def insert_pending_payment(conn: Connection, payment: PaymentRow) -> bool:
    """False when the order has a PENDING payment already (a racing call's)."""
    inserted = await conn.fetchval(
        _INSERT_PENDING_PAYMENT,
        payment.id,
        payment.order_id,
        payment.amount_cents,
        payment.redirect_url,
        payment.provider_reference,
        payment.needs_refund,
        payment.created_at,
    )
    return inserted is not None


async def insert_dead_letter(
    conn: Connection,
    *,
    order_id: int,
    payment_id: str,
    attempts: int,
    last_error: str,
    now: datetime,
) -> None:
    await conn.execute(_INSERT_DEAD_LETTER, order_id, payment_id, attempts, last_error, now)


# -- outbox ------------------------------------------------------------------------------

_INSERT_OUTBOX = Statement(
    "INSERT INTO outbox (topic, payload, created_at) VALUES ($1, $2, $3) RETURNING id"
)
_MARK_PUBLISHED = Statement("UPDATE outbox SET published_at = $1 WHERE id = ANY($2::int[])")
_UNPUBLISHED = (
    f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE published_at IS NULL AND created_at <= $1 "
    "ORDER BY id LIMIT $2"
)
_CLAIM_UNPUBLISHED = Statement(_UNPUBLISHED + " FOR UPDATE SKIP LOCKED", sqlite=_UNPUBLISHED)
_READ_UNPUBLISHED = Statement(_UNPUBLISHED)
_NEWEST_OUTBOX = Statement(f"SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id DESC LIMIT $1")
_PRUNE_OUTBOX = Statement("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1")
_OUTBOX_BACKLOG = Statement("SELECT count(*) FROM outbox WHERE published_at IS NULL")


async def insert_outbox(conn: Connection, topic: str, payload: str, now: datetime) -> OutboxRow:
    outbox_id: int = await conn.fetchval(_INSERT_OUTBOX, topic, payload, now)
    return OutboxRow(outbox_id, payload, now)


async def mark_published(conn: Connection, ids: Sequence[int], now: datetime) -> int:
    return await conn.execute(_MARK_PUBLISHED, now, list(ids))


async def unpublished(
    conn: Connection, created_before: datetime, limit: int, *, claim: bool = False
) -> list[OutboxRow]:
    """Oldest first. `claim` (PostgreSQL) locks them, skipping rows another transaction
    holds, so that concurrent relays split the rows between them."""
    stmt = _CLAIM_UNPUBLISHED if claim else _READ_UNPUBLISHED
    return [OutboxRow.of(r) for r in await conn.fetch(stmt, created_before, limit)]


async def newest_outbox(conn: Connection, limit: int) -> list[OutboxRow]:
    """Newest first, by id (created_at has no index)."""
    return [OutboxRow.of(r) for r in await conn.fetch(_NEWEST_OUTBOX, limit)]


async def prune_outbox(conn: Connection, published_before: datetime) -> int:
    return await conn.execute(_PRUNE_OUTBOX, published_before)


async def outbox_backlog(conn: Connection) -> int:
    return int(await conn.fetchval(_OUTBOX_BACKLOG))
