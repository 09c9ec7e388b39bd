"""The service exactly as `order-service serve` builds it, plus the baselines of bench/.

`uvicorn bench.baseline_app:app` serves `create_app(settings)` with four more routes
mounted on the same app object, behind the same middleware, so that every baseline is
measured in the same server, process and event loop as the GraphQL path it is set beside:

  GET  /bench/plain          a plain Starlette JSON route (vs `{ __typename }`)
  POST /bench/orders         the statements of `orders(limit: N)` with lines and owner (the
                             very texts of models/queries.py), run with asyncpg, answered
                             with the same JSON as /graphql
  POST /bench/create-order   createOrder's INSERTs (order, lines, its CREATED event) in one
                             transaction
  POST /bench/webhook        a SUCCESS webhook's statements (inbox, payment, order, event)

Production code never imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench import page
from infra.logs import configure_logging
from infra.security import decode_access_token
from infra.settings import Settings, load_settings
from models.queries import EVENT_LOG_LOCK
from server.app import create_app, freeze_startup_heap

SQL_PRICES = "SELECT sku, price_cents FROM products WHERE sku = ANY($1::text[])"
SQL_INSERT_ORDER = (
    "INSERT INTO orders (user_id, status, version, client_token, items_fingerprint, "
    "amount_cents, created_at, updated_at) VALUES ($1, 'PENDING', 1, $2, $3, $4, $5, $5) "
    "ON CONFLICT (user_id, client_token) DO NOTHING RETURNING id"
)
SQL_INSERT_LINES = (
    "INSERT INTO order_lines (order_id, sku, qty, unit_price_cents) "
    "SELECT $1, * FROM unnest($2::text[], $3::int[], $4::int[])"
)
SQL_INBOX = (
    "INSERT INTO webhook_inbox (delivery_key, payment_id, status, outcome, received_at) "
    "VALUES ($1, $2, $3, 'processed', $4) ON CONFLICT (delivery_key) DO NOTHING "
    "RETURNING delivery_key"
)
SQL_PAYMENT = (
    "UPDATE payments SET status = 'SUCCEEDED', updated_at = $3 "
    "WHERE id = $1 AND order_id = $2 AND status = 'PENDING' RETURNING order_id"
)
SQL_ORDER_PAID = (
    "UPDATE orders SET status = 'PAID', version = version + 1, updated_at = $2 "
    "WHERE id = $1 AND status = 'PENDING' RETURNING user_id, version"
)
# Written as published: nothing publishes the baseline's events, and left unpublished
# they were the service's relay's work during the measurements that came next (it
# published the baseline's ~5,000 rows at 500 a second, beside the service's webhooks).
# The event log's rule (docs/events.md): its lock, held to the commit, then the event.
# As the service does it (models/queries.py, _insert_outbox_locked): the lock taken by
# the insert itself, one round trip.
SQL_OUTBOX = (
    f"WITH log_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock({EVENT_LOG_LOCK})) "
    "INSERT INTO outbox (topic, payload, created_at, published_at, order_id, user_id, kind, "
    "source, actor_id, status, previous_status, version) "
    "SELECT 'order.status_changed', $1, $2::timestamptz, $2::timestamptz, $3::int, $4::int, "
    "$5, $6, $7::int, $8, $9, $10::int FROM log_lock"
)


def _dump_tasks() -> None:
    out = io.StringIO()
    tasks = asyncio.all_tasks()
    out.write(f"--- {len(tasks)} asyncio tasks ---\n")
    for task in tasks:
        out.write(f"{task!r}\n")
        task.print_stack(file=out)
    sys.stderr.write(out.getvalue())
    sys.stderr.flush()


def _bearer_user_id(request: Request, settings: Settings) -> int | None:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    claims = decode_access_token(token.strip(), secret=settings.secret_key.get_secret_value())
    return claims.user_id if claims else None


def _unauthenticated() -> Response:
    return JSONResponse({"errors": [{"message": "no token"}]}, status_code=401)


def mount_baselines(app: Starlette, settings: Settings) -> Starlette:
    """Add the baseline routes and an asyncpg pool (opened and closed with the app)."""
    dsn = settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    box: dict[str, asyncpg.Pool] = {}
    inner_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[None]:
        # SIGUSR2 prints every asyncio task's stack: how the harness sees where a server
        # that does not stop is waiting (py-spy only shows the idle event loop).
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _dump_tasks)
        async with inner_lifespan(a):
            if dsn.startswith("postgresql://"):
                # As many connections as SQLAlchemy's pool keeps (its overflow aside).
                size = settings.db_pool_size
                box["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=size)
            try:
                yield
            finally:
                if "pool" in box:
                    await box["pool"].close()

    app.router.lifespan_context = lifespan

    async def plain(_: Request) -> Response:
        return JSONResponse({"data": {"__typename": "Query"}})

    async def orders_page(request: Request) -> Response:
        user_id = _bearer_user_id(request, settings)
        if user_id is None:
            return _unauthenticated()
        body = orjson.loads(await request.body())
        limit = int((body.get("variables") or {}).get("limit", 10))
        async with box["pool"].acquire() as conn:
            found = await page.read(conn, user_id, limit)
        if found is None:
            return _unauthenticated()
        return Response(orjson.dumps(page.as_json(*found, limit)), media_type="application/json")

    async def create_order(request: Request) -> Response:
        user_id = _bearer_user_id(request, settings)
        if user_id is None:
            return _unauthenticated()
        body = orjson.loads(await request.body())
        spec = body["variables"]["input"]
        items = sorted(spec["items"], key=lambda i: i["sku"])
        skus = [i["sku"] for i in items]
        fingerprint = hashlib.sha256(orjson.dumps([[i["sku"], i["qty"]] for i in items]))
        now = datetime.now(UTC)
        async with box["pool"].acquire() as conn, conn.transaction():
            prices = dict(await conn.fetch(SQL_PRICES, skus))
            amount = sum(prices[i["sku"]] * i["qty"] for i in items)
            order_id = await conn.fetchval(
                SQL_INSERT_ORDER, user_id, spec["clientToken"], fingerprint.hexdigest(), amount, now
            )
            if order_id is not None:
                await conn.execute(
                    SQL_INSERT_LINES,
                    order_id,
                    skus,
                    [i["qty"] for i in items],
                    [prices[s] for s in skus],
                )
                created = {"order_id": order_id, "user_id": user_id, "status": "PENDING",
                           "previous_status": None, "version": 1, "kind": "CREATED"}  # fmt: skip
                await conn.execute(
                    SQL_OUTBOX, orjson.dumps(created).decode(), now, order_id, user_id,
                    "CREATED", "USER", user_id, "PENDING", None, 1,
                )  # fmt: skip
        answer = {"data": {"createOrder": {"id": str(order_id), "status": "PENDING"}}}
        return Response(orjson.dumps(answer), media_type="application/json")

    secrets = settings.webhook_secrets

    async def webhook(request: Request) -> Response:
        body = await request.body()
        signature = request.headers.get("x-signature") or ""
        expected = ["sha256=" + hmac.new(s, body, hashlib.sha256).hexdigest() for s in secrets]
        if not any(hmac.compare_digest(signature, e) for e in expected):
            return JSONResponse({"error": "invalid_signature"}, status_code=401)
        event = orjson.loads(body)
        payment_id, order_id = event["payment_id"], int(event["order_id"])
        now = datetime.now(UTC)
        async with box["pool"].acquire() as conn, conn.transaction():
            key = f"{payment_id}:{event['status']}"
            if await conn.fetchval(SQL_INBOX, key, payment_id, event["status"], now) is None:
                return JSONResponse({"status": "duplicate"})
            if await conn.fetchval(SQL_PAYMENT, payment_id, order_id, now) is None:
                return JSONResponse({"error": "not_found"}, status_code=404)
            changed = await conn.fetchrow(SQL_ORDER_PAID, order_id, now)
            if changed is not None:
                payload = {
                    "order_id": order_id,
                    "user_id": changed["user_id"],
                    "status": "PAID",
                    "previous_status": "PENDING",
                    "version": changed["version"],
                    "changed_at": now.isoformat(),
                }
                await conn.execute(
                    SQL_OUTBOX, orjson.dumps(payload).decode(), now, order_id,
                    changed["user_id"], "PAYMENT_SUCCEEDED", "PAYMENT_PROVIDER", None, "PAID",
                    "PENDING", changed["version"],
                )  # fmt: skip
        return JSONResponse({"status": "processed"})

    # First in the list: looked up before the app's own routes (and its catch-alls).
    app.router.routes[0:0] = [
        Route("/bench/plain", plain, methods=["GET"]),
        Route("/bench/orders", orders_page, methods=["POST"]),
        Route("/bench/create-order", create_order, methods=["POST"]),
        Route("/bench/webhook", webhook, methods=["POST"]),
    ]
    return app


def build() -> Starlette:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = mount_baselines(create_app(settings), settings)
    freeze_startup_heap()  # as `order-service serve` does
    return app


app = build()
