"""The statements of the request paths, one function each, on a `models.sql` connection.

Use cases (resolvers/) own the connection and the transaction; these functions only say
what to read or write, built from the tables with SQLAlchemy Core, and hand back the row
types of `models.rows`. Every statement is fixed (or one of a few shapes, for the order
filters), so asyncpg prepares each once per connection. Writes answer with the rows they
wrote (`RETURNING`), so what a request hands back is what the database holds, defaults
and all, without reading it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    LABEL_STYLE_TABLENAME_PLUS_COL,
    BigInteger,
    Date,
    DateTime,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    union,
    update,
)
from sqlalchemy.dialects import postgresql

from models import tables
from models.rows import (
    DeadLetterRow,
    LineRow,
    OrderRow,
    OutboxRow,
    PaymentRow,
    ProductRow,
    UserRow,
    columns,
    table_of,
)
from models.sql import Connection, Dialect, Statement
from models.state import OrderSort, PaymentStatus

users = table_of(tables.User)
product_table = table_of(tables.Product)
orders = table_of(tables.Order)
order_lines = table_of(tables.OrderLine)
payments = table_of(tables.Payment)
dead_letters = table_of(tables.PaymentDeadLetter)
inbox = table_of(tables.WebhookDelivery)
outbox = table_of(tables.OutboxEvent)

USER = columns(tables.User)
ORDER = columns(tables.Order)
LINE = columns(tables.OrderLine)
PAYMENT = columns(tables.Payment)
PRODUCT = columns(tables.Product)
OUTBOX = columns(tables.OutboxEvent)


def _p(name: str) -> Any:
    return bindparam(name)


def _insert(d: Dialect, table: Any, names: Sequence[str]) -> Any:
    """`INSERT INTO table (names...) VALUES (:name...)`; SQLAlchemy adds the columns
    that have a default in the table (models.sql fills in those the caller leaves out)."""
    return d.insert(table).values({name: bindparam(name) for name in names})


# -- users -------------------------------------------------------------------------------

USER_BY_ID = Statement(lambda d: select(*USER).where(users.c.id == _p("id")))
_USERS_BY_IDS = Statement(lambda d: select(*USER).where(d.one_of(users.c.id, "ids")))
_USER_BY_EMAIL = Statement(
    lambda d: select(*USER, users.c.password_hash).where(func.lower(users.c.email) == _p("email"))
)
_INSERT_USER = Statement(
    lambda d: (
        _insert(d, users, ["email", "password_hash", "role", "created_at"])
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(*USER)
    )
)
_SET_ROLE = Statement(
    lambda d: update(users).where(users.c.id == _p("user_id")).values(role=_p("role"))
)


async def user_by_id(conn: Connection, user_id: int) -> UserRow | None:
    return await conn.one(USER_BY_ID, UserRow, id=user_id)


async def users_by_ids(conn: Connection, user_ids: Sequence[int]) -> list[UserRow]:
    return await conn.rows(_USERS_BY_IDS, UserRow, ids=list(user_ids))


async def user_by_email(conn: Connection, email: str) -> tuple[UserRow, str] | None:
    """The user with this (lower-cased) email and its password hash, for logins."""
    compiled = _USER_BY_EMAIL.compiled(conn.dialect)
    rows = await conn.fetch(_USER_BY_EMAIL, email=email)
    if not rows:
        return None
    row = rows[0]
    return compiled.reader(UserRow)(row), row[compiled.index("password_hash")]


async def insert_user(
    conn: Connection, *, email: str, password_hash: str, role: str, now: datetime
) -> UserRow | None:
    """The new user; None when the email is taken."""
    return await conn.one(
        _INSERT_USER, UserRow, email=email, password_hash=password_hash, role=role, created_at=now
    )


async def set_role(conn: Connection, user_id: int, role: str) -> None:
    await conn.execute(_SET_ROLE, user_id=user_id, role=role)


# -- catalog -----------------------------------------------------------------------------

_PRODUCTS = Statement(lambda d: select(*PRODUCT).order_by(product_table.c.sku))


def _upsert_product(d: Dialect) -> Any:
    stmt = _insert(d, product_table, [c.key for c in PRODUCT])
    changed = {c.key: stmt.excluded[c.key] for c in PRODUCT if not c.primary_key}
    return stmt.on_conflict_do_update(index_elements=["sku"], set_=changed).returning(*PRODUCT)


_UPSERT_PRODUCT = Statement(_upsert_product)


async def products(conn: Connection) -> list[ProductRow]:
    return await conn.rows(_PRODUCTS, ProductRow)


async def upsert_product(
    conn: Connection, *, sku: str, name: str, price_cents: int, now: datetime
) -> ProductRow:
    product = await conn.one(
        _UPSERT_PRODUCT, ProductRow, sku=sku, name=name, price_cents=price_cents, updated_at=now
    )
    assert product is not None  # an upsert always writes its row
    return product


# -- orders ------------------------------------------------------------------------------

_ORDER_BY_ID = Statement(lambda d: select(*ORDER).where(orders.c.id == _p("id")))
_ORDER_BY_ID_LOCKED = Statement(
    lambda d: select(*ORDER).where(orders.c.id == _p("id")).with_for_update()
)
_ORDER_BY_TOKEN = Statement(
    lambda d: select(*ORDER).where(
        orders.c.user_id == _p("user_id"), orders.c.client_token == _p("client_token")
    )
)
_INSERT_ORDER = Statement(
    lambda d: (
        _insert(d, orders, [c.key for c in ORDER if not c.primary_key])
        .on_conflict_do_nothing(index_elements=["user_id", "client_token"])
        .returning(*ORDER)
    )
)


def _insert_lines(d: Dialect) -> Any:
    """The lines from three parallel lists (SKUs, quantities, prices), in list order."""
    target = [order_lines.c.order_id, order_lines.c.sku, order_lines.c.qty]
    target.append(order_lines.c.unit_price_cents)
    if d.is_postgres:
        given = (
            func.unnest(
                bindparam("skus", type_=postgresql.ARRAY(Text)),
                bindparam("qtys", type_=postgresql.ARRAY(Integer)),
                bindparam("prices", type_=postgresql.ARRAY(Integer)),
            )
            .table_valued("sku", "qty", "price", with_ordinality="n")
            .render_derived("l")
        )
        source = select(
            bindparam("order_id", type_=Integer), given.c.sku, given.c.qty, given.c.price
        ).order_by(given.c.n)
    else:
        sku = func.json_each(bindparam("skus")).table_valued("key", "value").alias("s")
        qty = func.json_each(bindparam("qtys")).table_valued("key", "value").alias("q")
        price = func.json_each(bindparam("prices")).table_valued("key", "value").alias("pr")
        source = (
            select(_p("order_id"), sku.c.value, qty.c.value, price.c.value)
            .select_from(
                sku.join(qty, qty.c.key == sku.c.key).join(price, price.c.key == sku.c.key)
            )
            .order_by(sku.c.key)
        )
    return order_lines.insert().from_select(target, source).returning(*LINE)


_INSERT_LINES = Statement(_insert_lines)
_LINES_OF = Statement(
    lambda d: (
        select(*LINE)
        .where(d.one_of(order_lines.c.order_id, "order_ids"))
        .order_by(order_lines.c.order_id, order_lines.c.id)
    )
)
_PRICES = Statement(
    lambda d: select(product_table.c.sku, product_table.c.price_cents).where(
        d.one_of(product_table.c.sku, "skus")
    )
)
_ONE = literal_column("1", Integer)
_MOVE_ORDER = Statement(
    lambda d: (
        update(orders)
        .where(orders.c.id == _p("id"), orders.c.version == _p("expected_version"))
        .values(status=_p("status"), version=orders.c.version + _ONE, updated_at=_p("now"))
        .returning(*ORDER)
    )
)


async def order_by_id(conn: Connection, order_id: int, *, lock: bool = False) -> OrderRow | None:
    return await conn.one(_ORDER_BY_ID_LOCKED if lock else _ORDER_BY_ID, OrderRow, id=order_id)


async def order_by_token(conn: Connection, user_id: int, client_token: str) -> OrderRow | None:
    return await conn.one(_ORDER_BY_TOKEN, OrderRow, user_id=user_id, client_token=client_token)


async def prices(conn: Connection, skus: Sequence[str]) -> dict[str, int]:
    compiled = _PRICES.compiled(conn.dialect)
    sku_at, price_at = compiled.index("sku"), compiled.index("price_cents")
    return {r[sku_at]: r[price_at] for r in await conn.fetch(_PRICES, skus=list(skus))}


async def insert_order(
    conn: Connection,
    *,
    user_id: int,
    status: str,
    client_token: str,
    items_fingerprint: str,
    amount_cents: int,
    now: datetime,
    **columns: Any,
) -> OrderRow | None:
    """The new order; None when the user already has an order with this token. Any other
    column may be given by name (`columns`); one left out gets the table's default, or
    NULL."""
    return await conn.one(
        _INSERT_ORDER,
        OrderRow,
        user_id=user_id,
        status=status,
        client_token=client_token,
        items_fingerprint=items_fingerprint,
        amount_cents=amount_cents,
        created_at=now,
        updated_at=now,
        **columns,
    )


@dataclass(frozen=True, slots=True)
class NewLine:
    sku: str
    qty: int
    unit_price_cents: int


async def insert_lines(conn: Connection, order_id: int, lines: Sequence[NewLine]) -> list[LineRow]:
    """All of an order's lines in one statement; the rows written, in the given order."""
    written = await conn.rows(
        _INSERT_LINES,
        LineRow,
        order_id=order_id,
        skus=[line.sku for line in lines],
        qtys=[line.qty for line in lines],
        prices=[line.unit_price_cents for line in lines],
    )
    # Ids follow the insert's order; RETURNING's own order is not promised.
    return sorted(written, key=lambda line: line.id)


async def lines_of(conn: Connection, order_ids: Sequence[int]) -> list[LineRow]:
    return await conn.rows(_LINES_OF, LineRow, order_ids=list(order_ids))


async def move_order(
    conn: Connection, order_id: int, status: str, expected_version: int, now: datetime
) -> OrderRow | None:
    """Optimistic locking: the moved order when it was at `expected_version`, else None."""
    return await conn.one(
        _MOVE_ORDER,
        OrderRow,
        id=order_id,
        expected_version=expected_version,
        status=status,
        now=now,
    )


_SET_ORDER_TIMES = Statement(
    lambda d: (
        update(orders)
        .where(orders.c.id == _p("id"))
        .values(created_at=_p("created_at"), updated_at=_p("updated_at"))
    )
)


async def set_order_times(
    conn: Connection, order_id: int, *, created_at: datetime, updated_at: datetime
) -> None:
    """Backdate an order (demo data spread over past days; the figures follow)."""
    await conn.execute(_SET_ORDER_TIMES, id=order_id, created_at=created_at, updated_at=updated_at)


@dataclass(frozen=True, slots=True)
class OrderFilter:
    """Which orders a listing covers, and in what order. `pattern` is a LIKE pattern for
    `q` (lower case, escaped with backslashes); it matches a SKU of the order, or with
    `match_emails` the owner's email; `order_id` is the order `q` names, if it names one.
    `created_from` is inclusive, `created_to` exclusive. `sort` is an `OrderSort` name.
    `skus`, `user_ids`: the catalog's SKUs and (with `match_emails`) the users whose email
    `pattern` matches (`read_page` looks them up when they are not given). `email`: `q` is a
    whole email (admin): the users are the one with that email (the unique index), not
    every email `pattern` is part of (the contract's "Orders at scale")."""

    user_id: int | None = None
    status: str | None = None
    pattern: str | None = None
    order_id: int | None = None
    match_emails: bool = False
    created_from: datetime | None = None
    created_to: datetime | None = None
    sort: str = OrderSort.NEWEST.value
    skus: tuple[str, ...] | None = None
    user_ids: tuple[int, ...] | None = None
    email: str | None = None

    def shape(self) -> tuple[Any, ...]:
        return (
            self.user_id is not None,
            self.status is not None,
            self.pattern is not None,
            self.order_id is not None and self.pattern is not None,
            self.match_emails and self.pattern is not None and bool(self.user_ids),
            self.created_from is not None,
            self.created_to is not None,
            # SKUs matched: none, one (then `= :sku`, which reads the (sku, order_id) index
            # in order_id order), or more.
            min(len(self.skus or ()), 2) if self.pattern is not None else 0,
            OrderSort(self.sort),
        )

    def params(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "status": self.status,
            "pattern": self.pattern,
            "order_id": self.order_id,
            "created_from": self.created_from,
            "created_to": self.created_to,
            "skus": list(self.skus or ()),
            "user_ids": list(self.user_ids or ()),
            "sku": self.skus[0] if self.skus else None,
        }


# A text search counts its matches up to this many; past it, the total is not exact.
SEARCH_COUNT_CAP = 10_000

# Each sort's first key and whether it runs newest (largest) first; ties break by id,
# newest first, in every sort.
SORT_KEYS: dict[OrderSort, tuple[str, bool]] = {
    OrderSort.NEWEST: ("created_at", True),
    OrderSort.OLDEST: ("created_at", False),
    OrderSort.RECENTLY_UPDATED: ("updated_at", True),
    OrderSort.AMOUNT_HIGH: ("amount_cents", True),
    OrderSort.AMOUNT_LOW: ("amount_cents", False),
}


def sort_key(order: OrderRow, sort: OrderSort) -> datetime | int:
    """The value of `sort`'s first key on `order` (what a keyset page starts after)."""
    value: datetime | int = getattr(order, SORT_KEYS[sort][0])
    return value


@dataclass(frozen=True, slots=True)
class Keyset:
    """A keyset page starts right after the order with this sort key and id."""

    key: datetime | int
    id: int


def _base_conditions(o: Any, shape: tuple[Any, ...]) -> list[Any]:
    """The conditions of a filter shape on the orders `o`, but for its text search."""
    by_user, by_status, _, _, _, since, until, _, _ = shape
    conditions: list[Any] = []
    if by_user:
        conditions.append(o.c.user_id == _p("user_id"))
    if by_status:
        conditions.append(o.c.status == _p("status"))
    if since:
        conditions.append(o.c.created_at >= bindparam("created_from", type_=DateTime(True)))
    if until:
        conditions.append(o.c.created_at < bindparam("created_to", type_=DateTime(True)))
    return conditions


def _sku_is(d: Dialect, line: Any, skus: int) -> Any:
    return line.c.sku == _p("sku") if skus == 1 else d.one_of(line.c.sku, "skus")


def _search_arms(d: Dialect, o: Any, shape: tuple[Any, ...]) -> list[Any]:
    """What a text search matches, one condition per way of matching (any one will do).

    SKUs are matched in the catalog (products: small) first (`search_terms`, a statement
    of its own: the planner then knows which SKUs, so how many orders, it is looking
    for), then the orders having lines with those SKUs through
    `ix_order_lines_sku_order`: the same orders as matching the lines' SKUs themselves,
    since a line's SKU is always a catalog SKU (createOrder prices every line from the
    catalog; products are never deleted). Emails: the users matching first (the same
    statement; a trigram index on PostgreSQL), then their orders
    (`ix_orders_user_created`)."""
    _, _, _, by_id, by_email, _, _, by_sku, _ = shape
    arms: list[Any] = []
    if by_sku:
        line = order_lines.alias("l")
        arms.append(select(1).where(line.c.order_id == o.c.id, _sku_is(d, line, by_sku)).exists())
    if by_id:
        arms.append(o.c.id == _p("order_id"))
    if by_email:
        arms.append(d.one_of(o.c.user_id, "user_ids"))
    return arms or [false()]  # matches nothing: no SKU, no order id, no email


def _after(c: Any, sort: OrderSort) -> Any:
    """Orders after the keyset `after_key`, `after_id` in `sort`: a range of the sort's
    index (the first key bounds it; only ties of that key look at the id)."""
    name, descending = SORT_KEYS[sort]
    column = c[name]
    key = bindparam("after_key", type_=Integer if name == "amount_cents" else DateTime(True))
    after_id = bindparam("after_id", type_=Integer)
    if descending:
        return and_(column <= key, or_(column < key, c.id < after_id))
    return and_(column >= key, or_(column > key, c.id < after_id))


def _sort_keys(c: Any, sort: OrderSort) -> list[Any]:
    """ORDER BY of a sort on the columns `c` (a table's or a subquery's); ties break by
    id, newest first, so pages never overlap."""
    name, descending = SORT_KEYS[sort]
    first = c[name].desc() if descending else c[name].asc()
    return [first, c.id.desc()]


def _counted(table: Any, *conditions: Any) -> Any:
    return select(func.coalesce(func.sum(table.c.orders), 0).cast(BigInteger)).where(*conditions)


def _total(d: Dialect, shape: tuple[Any, ...]) -> Any:
    """The total of a filter shape, as a scalar (see `read_page`)."""
    by_user, by_status, by_q, _, _, since, until, _, _ = shape
    if by_q:
        # Each way of matching counts at most one past the cap; the union, what is found.
        o = orders.alias("o")
        base = _base_conditions(o, shape)
        cap = literal_column(str(SEARCH_COUNT_CAP + 1), Integer)
        arms = [select(o.c.id).where(*base, arm).limit(cap) for arm in _search_arms(d, o, shape)]
        if shape[7] and not base:
            # The SKU arm alone: the matching lines' orders, read from the index on
            # (sku, order_id) without visiting the orders.
            line = order_lines.alias("cl")
            arms[0] = (
                select(line.c.order_id.label("id"))
                .where(_sku_is(d, line, shape[7]))
                .distinct()
                .limit(cap)
            )
        if len(arms) == 1:
            found = arms[0].subquery("f")
        else:
            parts = [a.subquery(f"f{i}") for i, a in enumerate(arms)]
            found = union(*(select(part.c.id) for part in parts)).subquery("f")
        return select(func.count()).select_from(found).scalar_subquery()
    if by_user and not (since or until):
        # A user's own orders: their counts (one row per status).
        counts = table_of(tables.UserOrderCount)
        where = [counts.c.user_id == _p("user_id")]
        if by_status:
            where.append(counts.c.status == _p("status"))
        return _counted(counts, *where).scalar_subquery()
    if by_user:
        # A user's orders in a date range: bounded by the user's orders (an index range).
        o = orders.alias("o")
        return (
            select(func.count()).select_from(o).where(*_base_conditions(o, shape)).scalar_subquery()
        )
    if since or until:
        # Whole UTC days from order_day_stats, the partial days at either end from the
        # orders (index ranges of at most a day each).
        stats = table_of(tables.OrderDayStats)
        day_type: Any = Date() if d.is_postgres else String()
        where = [
            stats.c.day >= bindparam("first_day", type_=day_type),
            stats.c.day < bindparam("end_day", type_=day_type),
        ]
        if by_status:
            where.append(stats.c.status == _p("status"))
        whole = _counted(stats, *where).scalar_subquery()

        def edge(start: str, end: str) -> Any:
            o = orders.alias(f"e_{start}")
            where = [
                o.c.created_at >= bindparam(start, type_=DateTime(True)),
                o.c.created_at < bindparam(end, type_=DateTime(True)),
            ]
            if by_status:
                where.append(o.c.status == _p("status"))
            return select(func.count()).select_from(o).where(*where).scalar_subquery()

        return whole + edge("head_from", "head_to") + edge("tail_from", "tail_to")
    counts = table_of(tables.OrderStatusCount)
    return _counted(
        counts, *([counts.c.status == _p("status")] if by_status else [])
    ).scalar_subquery()


def _like(column: Any) -> Any:
    return func.lower(column).like(_p("pattern"), escape="\\")


def _matching_skus() -> Any:
    return select(literal_column("'s'", String), product_table.c.sku).where(
        _like(product_table.c.sku)
    )


def _and_users(users_matching: Any) -> Any:
    """The matching SKUs, then the ids of the users `users_matching` picks."""
    matched = select(literal_column("'u'", String), users.c.id.cast(String))
    return _matching_skus().union_all(matched.where(users_matching))


_MATCHING_SKUS = Statement(lambda d: _matching_skus())
_MATCHING_SKUS_AND_USERS = Statement(lambda d: _and_users(_like(users.c.email)))
_MATCHING_SKUS_AND_EMAIL = Statement(lambda d: _and_users(users.c.email == _p("email")))


async def search_terms(
    conn: Connection, pattern: str, *, emails: bool, email: str | None = None
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The catalog's SKUs and (with `emails`) the users' ids whose email a search's LIKE
    `pattern` (lower case) matches, or, given a whole `email` (stored lower case), the
    user who has it: one statement."""
    if emails and email is not None:
        rows = await conn.fetch(_MATCHING_SKUS_AND_EMAIL, pattern=pattern, email=email)
    else:
        stmt = _MATCHING_SKUS_AND_USERS if emails else _MATCHING_SKUS
        rows = await conn.fetch(stmt, pattern=pattern)
    skus = tuple(sorted(row[1] for row in rows if row[0] == "s"))
    return skus, tuple(sorted(int(row[1]) for row in rows if row[0] == "u"))


@dataclass(slots=True)
class PageRead:
    """A page of orders with what came along in the same statement. `exact`: the total
    is the number of matching orders (a text search's is not, past SEARCH_COUNT_CAP).
    `more`: an order follows the page's last."""

    total: int
    orders: list[OrderRow]
    lines: list[LineRow]
    owners: list[UserRow]
    exact: bool = True
    more: bool = False


def page_statement(
    where: OrderFilter,
    *,
    with_lines: bool,
    with_owners: bool,
    keyset: bool = False,
    by_days: bool = False,
) -> Statement:
    """The statement `read_page` runs for this filter (its parameters: `where.params()`,
    `limit`, `offset` and `reach`; `after_key`, `after_id` with `keyset`; `first_day`,
    `end_day`, `head_*`, `tail_*` with a date range: see `read_page`). `by_days`: the
    page starts at the UTC day the offset falls in (`_day_jump`), only for `jumps(where)`."""
    return _page_read_statement((*where.shape(), keyset), with_lines, with_owners, by_days)


# From this offset on, a page of the date sorts (no text search, no owner, no date range)
# starts at the day its offset falls in (`_day_jump`) instead of skipping every order
# before it. Below it the plain OFFSET reads at most this many index entries anyway.
DAY_JUMP_FROM = 1_000


def jumps(where: OrderFilter) -> bool:
    """Whether the month and day counts can place a page of this filter: the date sorts,
    over all orders or one status (what `order_month_stats` and `order_day_stats` count),
    no search, owner or range."""
    return (
        OrderSort(where.sort) in (OrderSort.NEWEST, OrderSort.OLDEST)
        and where.pattern is None
        and where.user_id is None
        and where.created_from is None
        and where.created_to is None
    )


def _day_jump(d: Dialect, shape: tuple[Any, ...]) -> Any:
    """Where a page at `offset` of a date sort starts: the UTC day the offset falls in, as
    one row of `bound` (NEWEST: the start of the next day, the page reads the orders
    before it; OLDEST: the start of that day, the page reads those from it on) and `skip`
    (the offset within that day's orders). The month first, from `order_month_stats` (80
    rows a month at most: months are summed from the first in the sort's order until the
    offset is reached), then the day within it from `order_day_stats` (a range of its key,
    80 rows a day at most). No row: the offset is past the last order."""
    by_status, sort = shape[1], shape[-1]
    newest = SORT_KEYS[sort][1]
    offset = bindparam("offset", type_=BigInteger)

    def first_past(table: Any, key: str, where: list[Any], reach: Any, name: str) -> Any:
        """The first `key` (in the sort's order) by which the running count of orders
        passes `reach`, and the orders before it."""
        if by_status:
            where = [*where, table.c.status == _p("status")]
        per = (
            select(table.c[key].label("k"), func.sum(table.c.orders).label("n"))
            .where(*where)
            .group_by(table.c[key])
            .subquery(f"{name}_g")
        )
        order = per.c.k.desc() if newest else per.c.k.asc()
        through = func.sum(per.c.n).over(order_by=order)
        run = select(
            per.c.k, (through - per.c.n).label("before"), through.label("through")
        ).subquery(f"{name}_w")
        return (
            select(run.c.k, run.c.before)
            .where(run.c.through > reach)
            .order_by(run.c.k.desc() if newest else run.c.k.asc())
            .limit(literal_column("1", Integer))
        )

    months = table_of(tables.OrderMonthStats)
    month = first_past(months, "month", [], offset, "m").cte("m")
    first = select(month.c.k).scalar_subquery()
    skipped = select(month.c.before).scalar_subquery()
    days = table_of(tables.OrderDayStats)
    if d.is_postgres:
        after: Any = first.op("+")(literal_column("interval '1 month'"))
    else:
        after = func.date(first, "+1 month")
    in_month = [days.c.day >= first, days.c.day < after]
    day_row = first_past(days, "day", in_month, offset - skipped, "d").subquery("dd")
    day: Any = day_row.c.k
    if d.is_postgres:
        start = day + literal_column("1", Integer) if newest else day
        bound = func.timezone(literal_column("'UTC'"), start.cast(DateTime()))
    else:
        # Stored timestamps are `YYYY-MM-DD HH:MM:SS.ffffff` (UTC): text that sorts after
        # its day's `YYYY-MM-DD` and before the next day's.
        bound = func.date(day, "+1 day") if newest else day
    skip = (offset - skipped - day_row.c.before).cast(BigInteger)
    return select(bound.label("bound"), skip.label("skip"))


# Result columns of a page row: the table's alias, then the column (`p_id`, `l_sku`).
PAGE, LINES, OWNERS = "p_", "l_", "u_"


@lru_cache(maxsize=256)
def _page_read_statement(
    shape: tuple[Any, ...], with_lines: bool, with_owners: bool, by_days: bool = False
) -> Statement:
    filter_shape, keyset = shape[:-1], shape[-1]
    sort = filter_shape[-1]

    def build(d: Dialect) -> Any:
        count = select(_total(d, filter_shape).label("total")).subquery("t")
        o = orders.alias("o")
        base = _base_conditions(o, filter_shape)
        if keyset:
            base.append(_after(o.c, sort))
        columns = [o.c[c.key] for c in ORDER]
        # An offset past 2**31 (a page far beyond the last) is a page with no rows.
        limit = bindparam("limit", type_=BigInteger)
        offset: Any = bindparam("offset", type_=BigInteger)
        if by_days:
            # The day the offset falls in bounds the sort's index range; only that day's
            # orders before the page are skipped. No day (past the last order): no rows.
            jump = _day_jump(d, filter_shape).cte("j")
            bound = select(jump.c.bound).scalar_subquery()
            newest = SORT_KEYS[sort][1]
            base.append(o.c.created_at < bound if newest else o.c.created_at >= bound)
            skip = select(jump.c.skip).scalar_subquery()
            offset = func.coalesce(skip, literal_column("0", BigInteger))
        if not filter_shape[2]:
            page = (
                select(*columns)
                .where(*base)
                .order_by(*_sort_keys(o.c, sort))
                .limit(limit)
                .offset(offset)
                .subquery("p")
            )
        else:
            # A search: each way of matching reads its first `reach` (offset + limit)
            # orders in the sort's order through its own index; the page comes from
            # their union. One OR over the ways would read in one order for all of them.
            reach = bindparam("reach", type_=BigInteger)
            arms = [
                select(*columns)
                .where(*base, arm)
                .order_by(*_sort_keys(o.c, sort))
                .limit(reach)
                .subquery(f"a{i}")
                for i, arm in enumerate(_search_arms(d, o, filter_shape))
            ]
            found = (
                arms[0] if len(arms) == 1 else union(*(select(*a.c) for a in arms)).subquery("m")
            )
            page = (
                select(*found.c)
                .order_by(*_sort_keys(found.c, sort))
                .limit(limit)
                .offset(offset)
                .subquery("p")
            )
        selected: list[Any] = [count.c.total, *page.c]
        joined = count.outerjoin(page, true())
        order_by = _sort_keys(page.c, sort)
        if with_lines:
            line = order_lines.alias("l")
            selected += [line.c[c.key] for c in LINE]
            joined = joined.outerjoin(line, line.c.order_id == page.c.id)
            order_by.append(line.c.id)
        if with_owners:
            owner = users.alias("u")
            selected += [owner.c[c.key] for c in USER]
            joined = joined.outerjoin(owner, owner.c.id == page.c.user_id)
        return (
            select(*selected)
            .select_from(joined)
            .order_by(*order_by)
            .set_label_style(LABEL_STYLE_TABLENAME_PLUS_COL)
        )

    return Statement(build)


_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def day_split(
    start: datetime | None, end: datetime | None
) -> tuple[date, date, tuple[datetime, datetime], tuple[datetime, datetime]]:
    """[start, end) (open ends: all time) as whole UTC days [first_day, end_day) and the
    partial days before and after them (empty ranges when there are none)."""
    start, end = start or _EARLIEST, end or _LATEST
    last = end.date()
    if start.date() >= last:  # no whole day inside: all of it from the orders
        return last, last, (start, end), (end, end)
    first = start.date() if start == _midnight(start.date()) else start.date() + timedelta(1)
    if first >= last:
        return last, last, (start, end), (end, end)
    return first, last, (start, _midnight(first)), (_midnight(last), end)


async def read_page(
    conn: Connection,
    where: OrderFilter,
    *,
    limit: int,
    offset: int,
    with_lines: bool,
    with_owners: bool,
    after: Keyset | None = None,
) -> PageRead:
    """The total, a page (in the filter's sort, ties broken by id so pages never overlap;
    with `after`, the orders right after that one, `offset` orders on) and, if asked, the
    page's lines and owners: one statement, one round trip, where the four reads cost
    four. The total never counts the orders but for a text search (up to
    SEARCH_COUNT_CAP), a user's date range, or the partial days at the ends of a range:
    counts kept by triggers hold the rest (migration 0005_orders_at_scale). A deep page
    of a date sort (`offset` from DAY_JUMP_FROM, `jumps(where)`) skips whole days by
    their counts (`_day_jump`): its cost grows with the orders of one day, not with the
    page number."""
    if where.pattern is not None and (where.skus is None or where.user_ids is None):
        skus, user_ids = await search_terms(
            conn, where.pattern, emails=where.match_emails, email=where.email
        )
        where = replace(where, skus=skus, user_ids=user_ids)
    stmt = page_statement(
        where,
        with_lines=with_lines,
        with_owners=with_owners,
        keyset=after is not None,
        by_days=after is None and offset >= DAY_JUMP_FROM and jumps(where),
    )
    compiled = stmt.compiled(conn.dialect)
    params = where.params()
    if after is not None:
        params.update(after_key=after.key, after_id=after.id)
    if where.created_from is not None or where.created_to is not None:
        first_day, end_day, head, tail = day_split(where.created_from, where.created_to)
        days: tuple[Any, Any] = (first_day, end_day)
        if not conn.dialect.is_postgres:
            days = (first_day.isoformat(), end_day.isoformat())
        params.update(
            first_day=days[0],
            end_day=days[1],
            head_from=head[0],
            head_to=head[1],
            tail_from=tail[0],
            tail_to=tail[1],
        )
    # One order more than the page: whether another follows it.
    rows = await conn.fetch(
        stmt, **params, limit=limit + 1, offset=offset, reach=offset + limit + 1
    )
    total_at, order_at = compiled.index("t_total"), compiled.index(PAGE + "id")
    total = int(rows[0][total_at]) if rows else 0
    read = PageRead(
        total=total,
        orders=[],
        lines=[],
        owners=[],
        exact=where.pattern is None or total <= SEARCH_COUNT_CAP,
    )
    read_order = compiled.reader(OrderRow, PAGE)
    seen_orders: set[int] = set()
    for row in rows:
        order_id = row[order_at]
        if order_id is None or order_id in seen_orders:  # the count's row alone, or a line
            continue
        if len(seen_orders) == limit:
            read.more = True
            break
        seen_orders.add(order_id)
        read.orders.append(read_order(row))
    if with_lines:
        line_at, read_line = compiled.index(LINES + "id"), compiled.reader(LineRow, LINES)
        read.lines = [
            read_line(row)
            for row in rows
            if row[line_at] is not None and row[order_at] in seen_orders
        ]
    if with_owners:
        owner_at, read_owner = compiled.index(OWNERS + "id"), compiled.reader(UserRow, OWNERS)
        seen_owners: set[int] = set()
        for row in rows:
            owner_id = row[owner_at]
            if owner_id is None or owner_id in seen_owners or row[order_at] not in seen_orders:
                continue
            seen_owners.add(owner_id)
            read.owners.append(read_owner(row))
    return read


# -- payments and webhooks ---------------------------------------------------------------

_PAYMENTS_OF = Statement(
    lambda d: (
        select(*PAYMENT)
        .where(d.one_of(payments.c.order_id, "order_ids"))
        .order_by(payments.c.order_id, payments.c.created_at)
    )
)
_PAYMENT_BY_ID = Statement(lambda d: select(*PAYMENT).where(payments.c.id == _p("id")))
_PAYMENT_BY_ID_LOCKED = Statement(
    lambda d: select(*PAYMENT).where(payments.c.id == _p("id")).with_for_update()
)
_SET_PAYMENT = Statement(
    lambda d: (
        update(payments)
        .where(payments.c.id == _p("id"))
        .values(status=_p("status"), needs_refund=_p("needs_refund"), updated_at=_p("updated_at"))
    )
)
_INSERT_DELIVERY = Statement(
    lambda d: (
        _insert(d, inbox, ["delivery_key", "payment_id", "status", "outcome", "received_at"])
        .on_conflict_do_nothing(index_elements=["delivery_key"])
        .returning(inbox.c.delivery_key)
    )
)


async def payments_of(conn: Connection, order_ids: Sequence[int]) -> list[PaymentRow]:
    """Oldest first within each order."""
    return await conn.rows(_PAYMENTS_OF, PaymentRow, order_ids=list(order_ids))


async def payment_by_id(
    conn: Connection, payment_id: str, *, lock: bool = False
) -> PaymentRow | None:
    stmt = _PAYMENT_BY_ID_LOCKED if lock else _PAYMENT_BY_ID
    return await conn.one(stmt, PaymentRow, id=payment_id)


async def set_payment(conn: Connection, payment: PaymentRow) -> None:
    """Write a payment's status, refund flag and updated_at."""
    await conn.execute(
        _SET_PAYMENT,
        id=payment.id,
        status=payment.status,
        needs_refund=payment.needs_refund,
        updated_at=payment.updated_at,
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
    key = await conn.value(
        _INSERT_DELIVERY,
        delivery_key=delivery_key,
        payment_id=payment_id,
        status=status,
        outcome=outcome,
        received_at=now,
    )
    return key is not None


_PENDING_PAYMENT = Statement(
    lambda d: select(*PAYMENT).where(payments.c.order_id == _p("order_id"), tables.PENDING_ONLY)
)
_LATEST_PAYMENT = Statement(
    lambda d: (
        select(*PAYMENT)
        .where(payments.c.order_id == _p("order_id"))
        .order_by(payments.c.created_at.desc())
        .limit(1)
    )
)
# At most one PENDING payment per order is the partial unique index
# uq_payments_order_pending: a racing second insert does nothing.
_INSERT_PENDING_PAYMENT = Statement(
    lambda d: (
        _insert(
            d,
            payments,
            [
                "id",
                "order_id",
                "amount_cents",
                "status",
                "redirect_url",
                "provider_reference",
                "needs_refund",
                "created_at",
                "updated_at",
            ],
        )
        .on_conflict_do_nothing(index_elements=["order_id"], index_where=tables.PENDING_ONLY)
        .returning(*PAYMENT)
    )
)
_INSERT_DEAD_LETTER = Statement(
    lambda d: _insert(
        d, dead_letters, ["order_id", "payment_id", "attempts", "last_error", "created_at", "kind"]
    )
)


async def pending_payment(conn: Connection, order_id: int) -> PaymentRow | None:
    return await conn.one(_PENDING_PAYMENT, PaymentRow, order_id=order_id)


async def latest_payment(conn: Connection, order_id: int) -> PaymentRow | None:
    return await conn.one(_LATEST_PAYMENT, PaymentRow, order_id=order_id)


async def insert_pending_payment(
    conn: Connection,
    *,
    payment_id: str,
    order_id: int,
    amount_cents: int,
    redirect_url: str,
    provider_reference: str | None,
    now: datetime,
) -> PaymentRow | None:
    """The new PENDING payment; None when the order has one already (a racing call's)."""
    return await conn.one(
        _INSERT_PENDING_PAYMENT,
        PaymentRow,
        id=payment_id,
        order_id=order_id,
        amount_cents=amount_cents,
        status="PENDING",
        redirect_url=redirect_url,
        provider_reference=provider_reference,
        needs_refund=False,
        created_at=now,
        updated_at=now,
    )


async def insert_dead_letter(
    conn: Connection,
    *,
    order_id: int,
    payment_id: str,
    attempts: int,
    last_error: str,
    now: datetime,
    kind: str = tables.DEAD_LETTER_PAYMENT,
) -> None:
    await conn.execute(
        _INSERT_DEAD_LETTER,
        order_id=order_id,
        payment_id=payment_id,
        attempts=attempts,
        last_error=last_error,
        created_at=now,
        kind=kind,
    )


DEAD_LETTER = columns(tables.PaymentDeadLetter)
_DEAD_LETTER_BY_ID = Statement(lambda d: select(*DEAD_LETTER).where(dead_letters.c.id == _p("id")))
_STAMP_RETRIED = Statement(
    lambda d: (
        update(dead_letters)
        .where(dead_letters.c.id == _p("id"))
        .values(retried_at=_p("now"))
        .returning(*DEAD_LETTER)
    )
)


def _dead_letter_page(d: Dialect) -> Any:
    count = select(func.count().label("total")).select_from(dead_letters).subquery("t")
    page = (
        select(*DEAD_LETTER)
        .order_by(dead_letters.c.created_at.desc(), dead_letters.c.id.desc())
        .limit(bindparam("limit", type_=BigInteger))
        .offset(bindparam("offset", type_=BigInteger))
    ).subquery("p")
    return (
        select(count.c.total, *page.c)
        .select_from(count.outerjoin(page, true()))
        .order_by(page.c.created_at.desc(), page.c.id.desc())
        .set_label_style(LABEL_STYLE_TABLENAME_PLUS_COL)
    )


_DEAD_LETTER_PAGE = Statement(_dead_letter_page)


async def dead_letter_by_id(conn: Connection, dead_letter_id: int) -> DeadLetterRow | None:
    return await conn.one(_DEAD_LETTER_BY_ID, DeadLetterRow, id=dead_letter_id)


async def stamp_retried(conn: Connection, dead_letter_id: int, now: datetime) -> None:
    await conn.execute(_STAMP_RETRIED, id=dead_letter_id, now=now)


async def dead_letter_page(
    conn: Connection, *, limit: int, offset: int
) -> tuple[int, list[DeadLetterRow]]:
    """The number of dead letters and a page of them, newest first: one statement."""
    compiled = _DEAD_LETTER_PAGE.compiled(conn.dialect)
    rows = await conn.fetch(_DEAD_LETTER_PAGE, limit=limit, offset=offset)
    total_at, id_at = compiled.index("t_total"), compiled.index("p_id")
    read = compiled.reader(DeadLetterRow, "p_")
    total = int(rows[0][total_at]) if rows else 0
    return total, [read(row) for row in rows if row[id_at] is not None]


# -- refunds -----------------------------------------------------------------------------

_SUCCEEDED = PaymentStatus.SUCCEEDED.value
_FLAG_REFUNDS = Statement(
    lambda d: (
        update(payments)
        .where(
            payments.c.order_id == _p("order_id"),
            payments.c.status == _SUCCEEDED,
            payments.c.needs_refund.is_(False),
        )
        .values(needs_refund=True, updated_at=_p("now"))
        .returning(*PAYMENT)
    )
)
# The one refund call that may ask the provider now: a SUCCEEDED payment that needs a
# refund and that no other call claimed (or whose claim was abandoned, `stale_before`).
_CLAIM_REFUND = Statement(
    lambda d: (
        update(payments)
        .where(
            payments.c.id == _p("id"),
            payments.c.status == _SUCCEEDED,
            payments.c.needs_refund.is_(True),
            or_(
                payments.c.refund_started_at.is_(None),
                payments.c.refund_started_at < bindparam("stale_before", type_=DateTime(True)),
            ),
        )
        .values(refund_started_at=_p("now"))
        .returning(*PAYMENT)
    )
)
_RELEASE_REFUND = Statement(
    lambda d: (
        update(payments)
        .where(
            payments.c.id == _p("id"),
            payments.c.refund_started_at == bindparam("started", type_=DateTime(True)),
        )
        .values(refund_started_at=null())
    )
)
_MARK_REFUNDED = Statement(
    lambda d: (
        update(payments)
        .where(payments.c.id == _p("id"), payments.c.status == _SUCCEEDED)
        .values(
            status=PaymentStatus.REFUNDED.value,
            needs_refund=False,
            refund_started_at=null(),
            updated_at=_p("now"),
        )
        .returning(*PAYMENT)
    )
)


async def flag_refunds(conn: Connection, order_id: int, now: datetime) -> list[PaymentRow]:
    """Mark the order's SUCCEEDED payments as needing a refund; those it marked."""
    return await conn.rows(_FLAG_REFUNDS, PaymentRow, order_id=order_id, now=now)


async def claim_refund(
    conn: Connection, payment_id: str, now: datetime, stale_before: datetime
) -> PaymentRow | None:
    return await conn.one(
        _CLAIM_REFUND, PaymentRow, id=payment_id, now=now, stale_before=stale_before
    )


async def release_refund(conn: Connection, payment_id: str, started: datetime) -> None:
    """Give up a claim (the provider failed), if it is still ours."""
    await conn.execute(_RELEASE_REFUND, id=payment_id, started=started)


async def mark_refunded(conn: Connection, payment_id: str, now: datetime) -> PaymentRow | None:
    """SUCCEEDED becomes REFUNDED (refund flag and claim cleared); None: it was not
    SUCCEEDED (already refunded, say)."""
    return await conn.one(_MARK_REFUNDED, PaymentRow, id=payment_id, now=now)


# -- figures -----------------------------------------------------------------------------


def _day_of(d: Dialect, created_at: Any) -> Any:
    """The UTC day of a stored timestamp, as a date (PostgreSQL) or `YYYY-MM-DD` text."""
    if d.is_postgres:
        return func.timezone("UTC", created_at).cast(Date)
    return func.date(created_at)


def _order_stats(d: Dialect) -> Any:
    """Whole days from order_day_stats, the partial days at either end from the orders
    themselves (index range scans of at most a day each): one statement."""
    stats = table_of(tables.OrderDayStats)
    day_type: Any = Date() if d.is_postgres else String()

    def ts(name: str) -> Any:
        return bindparam(name, type_=DateTime(True))

    def edge(start: str, end: str) -> Any:
        return select(
            _day_of(d, orders.c.created_at).label("day"),
            orders.c.status,
            literal_column("1", BigInteger).label("orders"),
            orders.c.amount_cents.cast(BigInteger).label("amount_cents"),
        ).where(orders.c.created_at >= ts(start), orders.c.created_at < ts(end))

    whole = select(
        stats.c.day.cast(day_type).label("day"),
        stats.c.status,
        stats.c.orders.cast(BigInteger).label("orders"),
        stats.c.amount_cents,
    ).where(
        stats.c.day >= bindparam("first_day", type_=day_type),
        stats.c.day < bindparam("end_day", type_=day_type),
    )
    parts = whole.union_all(edge("head_from", "head_to"), edge("tail_from", "tail_to")).subquery(
        "parts"
    )
    orders_sum = func.sum(parts.c.orders)
    return (
        select(
            parts.c.day,
            parts.c.status,
            orders_sum.label("orders"),
            func.sum(parts.c.amount_cents).label("amount_cents"),
        )
        .group_by(parts.c.day, parts.c.status)
        .having(orders_sum > 0)
        .order_by(parts.c.day, parts.c.status)
    )


_ORDER_STATS = Statement(_order_stats)


@dataclass(frozen=True, slots=True)
class DayStats:
    day: str  # YYYY-MM-DD, UTC
    status: str
    orders: int
    amount_cents: int


async def order_stats(
    conn: Connection,
    *,
    first_day: date,
    end_day: date,
    head: tuple[datetime, datetime],
    tail: tuple[datetime, datetime],
) -> list[DayStats]:
    """Orders per UTC day and status: whole days in [first_day, end_day) from the
    figures the triggers keep, plus the orders created in `head` and `tail` ([from, to)
    ranges within the partial days at either end; an empty range adds nothing)."""
    days: tuple[Any, Any] = (first_day, end_day)
    if not conn.dialect.is_postgres:
        days = (first_day.isoformat(), end_day.isoformat())
    rows = await conn.fetch(
        _ORDER_STATS,
        first_day=days[0],
        end_day=days[1],
        head_from=head[0],
        head_to=head[1],
        tail_from=tail[0],
        tail_to=tail[1],
    )
    return [
        DayStats(
            day=row[0].isoformat() if isinstance(row[0], date) else str(row[0]),
            status=row[1],
            orders=int(row[2]),
            amount_cents=int(row[3]),
        )
        for row in rows
    ]


# -- outbox ------------------------------------------------------------------------------


# -- the order event log (the outbox) -----------------------------------------------------

_EVENT_COLUMNS = [
    "topic",
    "payload",
    "created_at",
    "order_id",
    "user_id",
    "kind",
    "source",
    "actor_id",
    "status",
    "previous_status",
    "version",
]
_INSERT_OUTBOX = Statement(lambda d: _insert(d, outbox, _EVENT_COLUMNS).returning(*OUTBOX))
# Held to the commit: event ids are handed out in commit order (resolvers/events.py).
EVENT_LOG_LOCK = 0x0E7E17


def _insert_outbox_locked(d: Dialect) -> Any:
    """PostgreSQL: take the log's lock and insert the event in one statement, one round
    trip: the lock is held from here to the commit, and every writer of an event waits
    for it, so the fewer trips between the two the better. The lock is a MATERIALIZED CTE
    that the inserted row is selected from: it is taken before the row is formed, so
    before its id (the sequence's default, evaluated for each row) is drawn."""
    lock = (
        select(func.pg_advisory_xact_lock(literal_column(str(EVENT_LOG_LOCK))))
        .cte("log_lock")
        .prefix_with("MATERIALIZED")
    )
    values = select(
        *(bindparam(name, type_=outbox.c[name].type) for name in _EVENT_COLUMNS)
    ).select_from(lock)
    return d.insert(outbox).from_select(_EVENT_COLUMNS, values).returning(*OUTBOX)


_INSERT_OUTBOX_LOCKED = Statement(_insert_outbox_locked)
_MARK_PUBLISHED = Statement(
    lambda d: update(outbox).where(d.one_of(outbox.c.id, "ids")).values(published_at=_p("now"))
)


def _unpublished(d: Dialect) -> Any:
    return (
        select(*OUTBOX)
        .where(outbox.c.published_at.is_(None), outbox.c.created_at <= _p("created_before"))
        .order_by(outbox.c.id)
        .limit(bindparam("limit", type_=Integer))
    )


# FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has no row locks and leaves it out.
_CLAIM_UNPUBLISHED = Statement(lambda d: _unpublished(d).with_for_update(skip_locked=True))
_READ_UNPUBLISHED = Statement(_unpublished)
_NEWEST_OUTBOX = Statement(
    lambda d: select(*OUTBOX).order_by(outbox.c.id.desc()).limit(bindparam("limit", type_=Integer))
)
_OUTBOX_BACKLOG = Statement(
    lambda d: select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
)
_EVENTS_OF_ORDER = Statement(
    lambda d: select(*OUTBOX).where(outbox.c.order_id == _p("order_id")).order_by(outbox.c.id)
)
_EVENT_HEAD = Statement(lambda d: select(func.coalesce(func.max(outbox.c.id), 0)))
_EVENT_AT_OR_BEFORE = Statement(
    lambda d: (
        select(outbox.c.created_at)
        .where(outbox.c.id <= _p("id"))
        .order_by(outbox.c.id.desc())
        .limit(1)
    )
)


async def insert_outbox(
    conn: Connection, topic: str, payload: str, now: datetime, **event: Any
) -> OutboxRow:
    """An event of the log; `event` holds its columns (order_id, user_id, kind, ...)."""
    # PostgreSQL: the log's lock comes with the insert (see _insert_outbox_locked).
    statement = _INSERT_OUTBOX_LOCKED if conn.dialect.is_postgres else _INSERT_OUTBOX
    row = await conn.one(
        statement, OutboxRow, topic=topic, payload=payload, created_at=now, **event
    )
    assert row is not None  # an insert without a conflict clause always writes its row
    return row


async def mark_published(conn: Connection, ids: Sequence[int], now: datetime) -> int:
    return await conn.execute(_MARK_PUBLISHED, now=now, ids=list(ids))


async def unpublished(
    conn: Connection, created_before: datetime, limit: int, *, claim: bool = False
) -> list[OutboxRow]:
    """Oldest first. `claim` (PostgreSQL) locks them, skipping rows another transaction
    holds, so that concurrent relays split the rows between them."""
    stmt = _CLAIM_UNPUBLISHED if claim else _READ_UNPUBLISHED
    return await conn.rows(stmt, OutboxRow, created_before=created_before, limit=limit)


async def newest_outbox(conn: Connection, limit: int) -> list[OutboxRow]:
    """Newest first, by id (created_at has no index)."""
    return await conn.rows(_NEWEST_OUTBOX, OutboxRow, limit=limit)


async def outbox_backlog(conn: Connection) -> int:
    return int(await conn.value(_OUTBOX_BACKLOG))


# --- operations: gauges read when /metrics is scraped ---------------------------------------

_PAYMENTS_NEEDING_REFUND = Statement(
    lambda d: select(func.count()).select_from(payments).where(payments.c.needs_refund.is_(True))
)
_DEAD_LETTER_COUNT = Statement(lambda d: select(func.count()).select_from(dead_letters))


async def payments_needing_refund(conn: Connection) -> int:
    """Payments that succeeded after their order was cancelled: money to give back."""
    return int(await conn.value(_PAYMENTS_NEEDING_REFUND))


async def dead_letter_count(conn: Connection) -> int:
    return int(await conn.value(_DEAD_LETTER_COUNT))


async def events_of_order(conn: Connection, order_id: int) -> list[OutboxRow]:
    """Every event of one order, oldest first."""
    return await conn.rows(_EVENTS_OF_ORDER, OutboxRow, order_id=order_id)


async def event_head(conn: Connection) -> int:
    """The newest event's id (0 for none): every event up to it is committed."""
    return int(await conn.value(_EVENT_HEAD))


async def event_time_at_or_before(conn: Connection, event_id: int) -> datetime | None:
    """When the event `event_id` (or the last one before it) was written."""
    value = await conn.value(_EVENT_AT_OR_BEFORE, id=event_id)
    return None if value is None else tables.as_utc(value)


@lru_cache(maxsize=16)
def _scan_statement(by_user: bool, by_order: bool, status_only: bool) -> Statement:
    def build(d: Dialect) -> Any:
        conditions = [outbox.c.id > _p("after"), outbox.c.id <= _p("upto")]
        if by_user:
            conditions.append(outbox.c.user_id == _p("user_id"))
        if by_order:
            conditions.append(outbox.c.order_id == _p("order_id"))
        if status_only:
            conditions.append(outbox.c.previous_status.is_not(None))
        return (
            select(*OUTBOX)
            .where(*conditions)
            .order_by(outbox.c.id)
            .limit(bindparam("limit", type_=Integer))
        )

    return Statement(build)


async def scan_events(
    conn: Connection,
    *,
    after: int,
    upto: int,
    limit: int,
    user_id: int | None = None,
    order_id: int | None = None,
    status_only: bool = False,
) -> list[OutboxRow]:
    """Events with `after < id <= upto` (of one owner, one order, status changes only),
    oldest first, at most `limit`."""
    stmt = _scan_statement(user_id is not None, order_id is not None, status_only)
    params: dict[str, Any] = {"after": after, "upto": upto, "limit": limit}
    if user_id is not None:
        params["user_id"] = user_id
    if order_id is not None:
        params["order_id"] = order_id
    return await conn.rows(stmt, OutboxRow, **params)
