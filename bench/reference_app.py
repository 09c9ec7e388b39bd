"""The issue's reference servers, measured in the same run as the service.

The issue gives its figures for a bare Starlette JSON route and for stock Strawberry on
its own machine. This app serves both, with nothing of the service around them (no
middleware, no access log, no metrics, no rate limits), so that the report can say how
fast this machine is against the issue's, and how the service compares with stock
Strawberry here:

  GET  /plain     a bare Starlette JSON route: `{"data": {"__typename": "Query"}}`
  POST /orders    a bare Starlette route: the page of bench/page.py with asyncpg, as JSON
  POST /graphql   stock Strawberry (strawberry.asgi.GraphQL, its parser and validation
                  caches on, as the issue's second figure), answering `{ __typename }` and
                  `orders(limit: N)` with lines and owner from the same asyncpg statements

Both read routes answer exactly what the service's /graphql answers. Served by
`python -m bench.serve --app bench.reference_app:app --bare`; production code never
imports this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from enum import Enum
from typing import Any

import asyncpg
import jwt
import orjson
import strawberry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

from bench import page
from infra.settings import load_settings

settings = load_settings()
SECRET = settings.secret_key.get_secret_value()
DSN = settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
pool: dict[str, asyncpg.Pool] = {}


def bearer_user_id(request: Request) -> int | None:
    """What a stock app does with a bearer token: PyJWT, HS256, the `sub` claim."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    try:
        return int(jwt.decode(token.strip(), SECRET, algorithms=["HS256"])["sub"])
    except (jwt.PyJWTError, KeyError, ValueError):
        return None


@strawberry.enum
class OrderStatus(Enum):
    PENDING = "PENDING"
    PAID = "PAID"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"


@strawberry.enum
class Role(Enum):
    ADMIN = "ADMIN"
    USER = "USER"


@strawberry.type
class User:
    id: strawberry.ID
    email: str
    role: Role


@strawberry.type
class OrderItem:
    sku: str
    qty: int
    unit_price_cents: int
    line_total_cents: int


@strawberry.type
class Order:
    id: strawberry.ID
    status: OrderStatus
    version: int
    amount_cents: int
    created_at: datetime
    items: list[OrderItem]
    user: User


@strawberry.type
class OrderPage:
    items: list[Order]
    total: int
    page: int
    limit: int
    pages: int


def _page_of(caller: asyncpg.Record, rows: list[asyncpg.Record], limit: int) -> OrderPage:
    owner = User(
        id=strawberry.ID(str(caller["id"])), email=caller["email"], role=Role(caller["role"])
    )
    orders = [
        Order(
            id=strawberry.ID(str(o[page.ORDER_ID])),
            status=OrderStatus(o[page.STATUS]),
            version=o[page.VERSION],
            amount_cents=o[page.AMOUNT],
            created_at=page.utc(o[page.CREATED]),
            items=[
                OrderItem(
                    sku=line[page.SKU],
                    qty=line[page.QTY],
                    unit_price_cents=line[page.UNIT_PRICE],
                    line_total_cents=line[page.UNIT_PRICE] * line[page.QTY],
                )
                for line in lines
            ],
            user=owner,
        )
        for o, lines in page.grouped(rows)
    ]
    total, pages = page.total_and_pages(rows, limit)
    return OrderPage(items=orders, total=total, page=1, limit=limit, pages=pages)


@strawberry.type
class Query:
    @strawberry.field
    async def orders(self, info: strawberry.Info, limit: int = 10) -> OrderPage:
        user_id = bearer_user_id(info.context["request"])
        if user_id is None:
            raise PermissionError("no token")
        async with pool["pool"].acquire() as conn:
            found = await page.read(conn, user_id, limit)
        if found is None:
            raise PermissionError("no such user")
        return _page_of(*found, limit)


schema = strawberry.Schema(
    query=Query, extensions=[lambda: ParserCache(maxsize=512), lambda: ValidationCache(maxsize=512)]
)


async def plain(_: Request) -> Response:
    return JSONResponse({"data": {"__typename": "Query"}})


async def orders_page(request: Request) -> Response:
    user_id = bearer_user_id(request)
    if user_id is None:
        return JSONResponse({"errors": [{"message": "no token"}]}, status_code=401)
    body = orjson.loads(await request.body())
    limit = int((body.get("variables") or {}).get("limit", 10))
    async with pool["pool"].acquire() as conn:
        found = await page.read(conn, user_id, limit)
    if found is None:
        return JSONResponse({"errors": [{"message": "no such user"}]}, status_code=401)
    return Response(orjson.dumps(page.as_json(*found, limit)), media_type="application/json")


@contextlib.asynccontextmanager
async def lifespan(_: Any) -> AsyncIterator[None]:
    # As many connections as the service's pool keeps.
    pool["pool"] = await asyncpg.create_pool(DSN, min_size=1, max_size=settings.db_pool_size)
    try:
        yield
    finally:
        await pool.pop("pool").close()


app = Starlette(
    routes=[
        Route("/plain", plain, methods=["GET"]),
        Route("/orders", orders_page, methods=["POST"]),
        Route("/graphql", GraphQL(schema, graphql_ide=None), methods=["POST"]),
        Route("/health", plain, methods=["GET"]),
    ],
    lifespan=lifespan,
)
