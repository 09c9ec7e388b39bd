"""The run's throwaway PostgreSQL database and Redis prefix, and the data loaded into them."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.runs import Run
from infra.security import create_access_token


async def create_database(run: Run) -> None:
    run.db_name = f"bench_{run.run_id}"
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{run.db_name}"')
    finally:
        await conn.close()
    from models.migrate import upgrade_to_head

    await upgrade_to_head(run.sqlalchemy_url)


async def drop_database(run: Run) -> None:
    if not run.db_name:
        return
    conn = await asyncpg.connect(run.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{run.db_name}" WITH (FORCE)')
    finally:
        await conn.close()


async def clear_redis(run: Run) -> None:
    if not run.prefix:
        return
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(run.redis_url)
    try:
        async for key in client.scan_iter(match=f"{run.prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


SEED_ORDERS = """
WITH o AS (
  INSERT INTO orders (user_id, status, version, client_token, items_fingerprint, amount_cents,
                      created_at, updated_at)
  SELECT $1, 'PENDING', 1, $2 || '-' || g, md5(g::text) || md5(g::text), 3000,
         now() - make_interval(secs => g), now() - make_interval(secs => g)
  FROM generate_series(1, $3) g
  RETURNING id)
INSERT INTO order_lines (order_id, sku, qty, unit_price_cents)
SELECT o.id, s.sku, s.qty, 1000 FROM o
CROSS JOIN (VALUES ('GADGET-002', 1), ('WIDGET-001', 2)) AS s(sku, qty)
"""


SEED_PAYMENTS = """
WITH o AS (
  INSERT INTO orders (user_id, status, version, client_token, items_fingerprint, amount_cents,
                      created_at, updated_at)
  SELECT $1, 'PENDING', 1, $2 || '-' || g, md5(g::text) || md5(g::text), 1000, now(), now()
  FROM generate_series(1, $3) g
  RETURNING id, client_token)
INSERT INTO payments (id, order_id, amount_cents, status, redirect_url, needs_refund,
                      created_at, updated_at)
SELECT 'pay_' || client_token, id, 1000, 'PENDING', 'http://127.0.0.1/sim', false, now(), now()
FROM o
RETURNING id, order_id
"""


async def seed(run: Run, reader_orders: int) -> None:
    conn = await asyncpg.connect(run.db_url)
    try:
        for name, role in (
            ("reader", "USER"),
            ("writer", "USER"),
            ("payer", "USER"),
            ("admin", "ADMIN"),
        ):
            uid = await conn.fetchval(
                "INSERT INTO users (email, password_hash, role, created_at) "
                "VALUES ($1, $2, $3, now()) RETURNING id",
                f"{name}@bench.example.com",
                "!unusable",
                role,
            )
            run.users[name] = uid
            run.tokens[name] = "Bearer " + create_access_token(
                uid, role, secret=run.secret_key, expires_minutes=240
            )
        await conn.execute(SEED_ORDERS, run.users["reader"], "seed", reader_orders)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def payment_batch(run: Run, size: int) -> tuple[str, Path, int]:
    """`size` PENDING orders with a PENDING payment each, and their signed SUCCESS
    deliveries, one per line: (batch tag, lines file, size)."""
    run.batches += 1
    tag = f"b{run.batches}"
    conn = await connect(run)
    try:
        for attempt in range(5):
            try:
                rows = await conn.fetch(SEED_PAYMENTS, run.users["payer"], tag, size)
                break
            except asyncpg.DeadlockDetectedError:
                # The servers of the measurement before may still be settling the last
                # batch (status changes, counters) against these rows: PostgreSQL chose
                # this statement to roll back, so it can simply run again.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await conn.close()
    path = run.workdir / f"webhooks-{tag}.tsv"
    key = run.webhook_secret.encode()
    with open(path, "w") as f:
        for row in rows:
            body = orjson.dumps(
                {"payment_id": row["id"], "order_id": str(row["order_id"]), "status": "SUCCESS"}
            )
            sig = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            f.write(f"{body.decode()}\t{sig}\n")
    return tag, path, len(rows)


async def connect(run: Run) -> asyncpg.Connection:
    """A connection for the harness itself; waits out a momentary connection limit (the
    machine's PostgreSQL is shared with other test suites)."""
    for attempt in range(20):
        try:
            return await asyncpg.connect(run.db_url)
        except asyncpg.TooManyConnectionsError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def analyze(run: Run) -> None:
    """Fresh planner statistics: the writes and webhooks add tens of thousands of orders,
    and a read measured after them on statistics from the seed gets worse plans (the bare
    route's page fell from ~700 to ~90 requests/s), which autovacuum would not allow to
    last in a real database."""
    conn = await connect(run)
    try:
        await conn.execute("ANALYZE users, orders, order_lines, payments")
    finally:
        await conn.close()


async def count(run: Run, sql: str, *params: Any) -> int:
    conn = await connect(run)
    try:
        return int(await conn.fetchval(sql, *params))
    finally:
        await conn.close()
