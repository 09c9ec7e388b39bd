"""Demo data: a catalog, three logins and orders in every status, spread over the last
30 days, paid the way real orders are (a payment, then the provider's SUCCESS webhook), a
cancelled paid order whose payment needs a refund, and payments the provider refused."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from models import queries
from models.state import OrderStatus
from models.tables import utcnow
from resolvers import accounts, catalog, events, orders, payments
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
# Paths through the state machine, one per demo order, cycled. PAID comes from a
# payment's SUCCESS webhook, as it does for real orders.
_PATHS: tuple[tuple[OrderStatus, ...], ...] = (
    (),
    (OrderStatus.PAID,),
    (OrderStatus.PAID, OrderStatus.SHIPPED),
    (OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.DELIVERED),
    (OrderStatus.CANCELLED,),
    (OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.DELIVERED),
    (),
    (OrderStatus.PAID, OrderStatus.CANCELLED),  # paid, then cancelled: needs a refund
)
DEMO_ORDERS_PER_USER = 40
DEMO_DAYS = 30
# Every this many PENDING demo orders, a payment the provider refused (a dead letter).
_DEAD_LETTER_EVERY = 5


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


async def _pay(services: Services, order_id: int, amount_cents: int) -> None:
    """A payment, then the provider's SUCCESS webhook: the order becomes PAID on the
    path a real one takes (the simulated provider's payment; no provider is asked)."""
    base_url = (services.settings.public_url or payments.DEFAULT_BASE_URL).rstrip("/")
    payment_id = payments.new_payment_id()
    async with services.db.begin() as conn:
        await queries.insert_pending_payment(
            conn,
            payment_id=payment_id,
            order_id=order_id,
            amount_cents=amount_cents,
            redirect_url=payments.simulator_url(base_url, payment_id),
            provider_reference=None,
            now=utcnow(),
        )
    event = payments.ProviderEvent(payment_id, order_id, payments.ProviderStatus.SUCCESS)
    await payments.apply_webhook(services, event)


async def _refused(services: Services, order_id: int, n: int) -> None:
    async with services.db.begin() as conn:
        await queries.insert_dead_letter(
            conn,
            order_id=order_id,
            payment_id=payments.new_payment_id(),
            attempts=3,
            last_error="HTTP 503" if n % 2 else "timeout (ReadTimeout)",
            now=utcnow(),
        )


async def seed_demo(services: Services) -> list[tuple[str, str, str]]:
    """Idempotent: running it twice adds nothing the second time."""
    admin = await _login(services, *DEMO_USERS[0])
    for sku, name, price in DEMO_PRODUCTS:
        await catalog.upsert_product(admin, sku, name, price)
    rng = random.Random(42)
    skus = [p[0] for p in DEMO_PRODUCTS]
    now = utcnow()
    for email, password, role in DEMO_USERS[1:]:
        ctx = await _login(services, email, password, role)
        for n in range(DEMO_ORDERS_PER_USER):
            picked = rng.sample(skus, rng.randint(1, 3))
            items = [orders.ItemInput(sku=s, qty=rng.randint(1, 4)) for s in picked]
            age = timedelta(days=rng.uniform(0, DEMO_DAYS - 1), minutes=rng.randint(0, 59))
            started = utcnow()
            view = await orders.create_order(ctx, items, f"demo-{email.split('@')[0]}-{n}")
            if view.order.created_at < started:
                continue  # made in an earlier run
            order = view.order
            async with services.db.begin() as conn:
                await queries.set_order_times(
                    conn, order.id, created_at=now - age, updated_at=now - age
                )
            path = _PATHS[n % len(_PATHS)]
            if not path and n % _DEAD_LETTER_EVERY == 0:
                await _refused(services, order.id, n)
            version = 1
            for target in path:
                if target is OrderStatus.PAID:
                    await _pay(services, order.id, order.amount_cents)
                else:
                    async with services.db.begin() as conn:
                        change = await orders.change_status(conn, order.id, target, version)
                        rows = await orders.record_change(conn, change)
                    await events.after_commit(services, rows, {change.order.user_id})
                version += 1
    await events.after_commit(services, [], set())
    return [(e, p, r) for e, p, r in DEMO_USERS]
