"""Demo data: a catalog, three logins and orders in every status."""

from __future__ import annotations

import random
import uuid

from models.state import OrderStatus
from resolvers import accounts, catalog, events, orders
from resolvers.context import RequestContext, Services
from resolvers.errors import EmailTaken

DEMO_USERS = (
    ("admin@example.com", "admin-pass-123", "ADMIN"),
    ("alice@example.com", "alice-pass-123", "USER"),
    ("bob@example.com", "bob-pass-123", "USER"),
)
DEMO_PRODUCTS = (
    ("WIDGET-001", "Widget", 1000),
    ("GADGET-002", "Gadget", 1000),
    ("GIZMO-003", "Gizmo", 2450),
    ("DOOHICKEY-004", "Doohickey", 499),
    ("THINGAMAJIG-005", "Thingamajig", 12900),
)
# Paths through the state machine, one per demo order, cycled.
_PATHS: tuple[tuple[OrderStatus, ...], ...] = (
    (),
    (OrderStatus.PAID,),
    (OrderStatus.PAID, OrderStatus.SHIPPED),
    (OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.DELIVERED),
    (OrderStatus.CANCELLED,),
    (),
)
DEMO_ORDERS_PER_USER = 20


def _context(services: Services) -> RequestContext:
    return RequestContext(services=services, request_id=f"seed-{uuid.uuid4().hex[:8]}")


async def _login(services: Services, email: str, password: str, role: str) -> RequestContext:
    ctx = _context(services)
    try:
        if role == "ADMIN":
            await accounts.promote_or_create_admin(ctx, email, password)
        else:
            await accounts.create_user(ctx, email, password)
    except EmailTaken:
        pass
    result = await accounts.login(ctx, email, password)
    ctx.authenticate(f"Bearer {result.access_token}")
    return ctx


async def seed_demo(services: Services) -> list[tuple[str, str, str]]:
    """Idempotent: running it twice adds nothing the second time."""
    admin = await _login(services, *DEMO_USERS[0])
    for sku, name, price in DEMO_PRODUCTS:
        await catalog.upsert_product(admin, sku, name, price)
    rng = random.Random(42)
    skus = [p[0] for p in DEMO_PRODUCTS]
    for email, password, role in DEMO_USERS[1:]:
        ctx = await _login(services, email, password, role)
        for n in range(DEMO_ORDERS_PER_USER):
            picked = rng.sample(skus, rng.randint(1, 3))
            items = [orders.ItemInput(sku=s, qty=rng.randint(1, 4)) for s in picked]
            view = await orders.create_order(ctx, items, f"demo-{email.split('@')[0]}-{n}")
            if view.order.version != 1:
                continue  # already moved in an earlier run
            version = 1
            for target in _PATHS[n % len(_PATHS)]:
                async with services.db.begin() as conn:
                    order, event = await orders.change_status(conn, view.order.id, target, version)
                    row = await events.record(conn, event)
                await events.after_commit(services, [row], {order.user_id})
                version += 1
    return [(e, p, r) for e, p, r in DEMO_USERS]
