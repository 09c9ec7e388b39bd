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

SQL_USER = queries.USER_BY_ID.pg


def page_sql(user_id: int) -> str:
    where = queries.OrderFilter(user_id=user_id)
    return queries.page_statement(where, with_lines=True, with_owners=False).pg


async def read(
    conn: asyncpg.Connection, user_id: int, limit: int
) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    """The caller and the rows of the first page of its orders, one row per line (the
    count, the order's columns 1-9, the line's 10-14); None if the caller is gone."""
    caller = await conn.fetchrow(SQL_USER, user_id)
    if caller is None:
        return None
    return caller, await conn.fetch(page_sql(user_id), user_id, limit, 0)


def iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def as_json(caller: asyncpg.Record, rows: list[asyncpg.Record], limit: int) -> dict[str, Any]:
    """The GraphQL answer, built by hand: `{"data": {"orders": ...}}`."""
    total = rows[0]["total"] if rows else 0
    # A USER's orders are all the caller's own: production reads no other owner.
    owner = {"id": str(caller["id"]), "email": caller["email"], "role": caller["role"]}
    orders: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r[1] is None:
            continue
        order = orders.get(r[1])
        if order is None:
            order = orders[r[1]] = {
                "id": str(r[1]),
                "status": r[3],
                "version": r[4],
                "amountCents": r[7],
                "createdAt": iso(r[8]),
                "items": [],
                "user": owner,
            }
        if r[10] is not None:
            order["items"].append(
                {
                    "sku": r[12],
                    "qty": r[13],
                    "unitPriceCents": r[14],
                    "lineTotalCents": r[14] * r[13],
                }
            )
    pages = -(-total // limit) if total else 0
    return {
        "data": {
            "orders": {"total": total, "page": 1, "pages": pages, "items": list(orders.values())}
        }
    }
