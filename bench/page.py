"""The page of orders that the read workloads ask for, read with asyncpg alone.

The statements are the ones production runs for `orders(limit: N) { total page pages
items { ... user { id email role } } }` asked by a USER (see resolvers/orders.py and
RequestContext.current_user): the caller, then the count, the page and its lines in one
statement. Their texts come from models/queries.py, so a baseline always runs what
production runs. Used by the baseline routes (bench/baseline_app.py) and by the
reference servers (bench/reference_app.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from models import queries
from models.sql import POSTGRES

SQL_USER = queries.USER_BY_ID.pg
# The page of one user's orders with their lines (its parameters: user_id, limit, offset).
PAGE = queries.page_statement(
    queries.OrderFilter(user_id=0), with_lines=True, with_owners=False
).compiled(POSTGRES)


async def read(
    conn: asyncpg.Connection, user_id: int, limit: int
) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    """The caller and the rows of the first page of its orders, one row per line (the
    count, the order's columns, the line's); None if the caller is gone."""
    caller = await conn.fetchrow(SQL_USER, user_id)
    if caller is None:
        return None
    args = PAGE.args({"user_id": user_id, "limit": limit, "offset": 0})
    return caller, await conn.fetch(PAGE.text, *args)


# A page row, by column name: the count, the order's columns (p_...), the line's (l_...);
# an order without lines has NULL line columns, and a page past the last order one row
# of NULLs.
ORDER_ID, STATUS, VERSION, AMOUNT, CREATED = (
    "p_id",
    "p_status",
    "p_version",
    "p_amount_cents",
    "p_created_at",
)
LINE_ID, SKU, QTY, UNIT_PRICE = "l_id", "l_sku", "l_qty", "l_unit_price_cents"


def grouped(rows: list[asyncpg.Record]) -> list[tuple[asyncpg.Record, list[asyncpg.Record]]]:
    """The page's orders in the page's order: each one's first row and its line rows."""
    orders: dict[int, tuple[asyncpg.Record, list[asyncpg.Record]]] = {}
    for r in rows:
        if r[ORDER_ID] is None:
            continue
        _, lines = orders.setdefault(r[ORDER_ID], (r, []))
        if r[LINE_ID] is not None:
            lines.append(r)
    return list(orders.values())


def total_and_pages(rows: list[asyncpg.Record], limit: int) -> tuple[int, int]:
    total = int(rows[0]["t_total"]) if rows else 0
    return total, -(-total // limit) if total else 0


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def as_json(caller: asyncpg.Record, rows: list[asyncpg.Record], limit: int) -> dict[str, Any]:
    """The GraphQL answer, built by hand: `{"data": {"orders": ...}}`."""
    # A USER's orders are all the caller's own: production reads no other owner.
    owner = {"id": str(caller["id"]), "email": caller["email"], "role": caller["role"]}
    items = [
        {
            "id": str(o[ORDER_ID]),
            "status": o[STATUS],
            "version": o[VERSION],
            "amountCents": o[AMOUNT],
            "createdAt": utc(o[CREATED]).isoformat(),
            "items": [
                {
                    "sku": line[SKU],
                    "qty": line[QTY],
                    "unitPriceCents": line[UNIT_PRICE],
                    "lineTotalCents": line[UNIT_PRICE] * line[QTY],
                }
                for line in lines
            ],
            "user": owner,
        }
        for o, lines in grouped(rows)
    ]
    total, pages = total_and_pages(rows, limit)
    return {"data": {"orders": {"total": total, "page": 1, "pages": pages, "items": items}}}
