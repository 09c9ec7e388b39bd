"""The product catalog."""

from __future__ import annotations

import re

from models import queries
from models.rows import ProductRow
from models.tables import utcnow
from resolvers.context import RequestContext
from resolvers.errors import FieldErrors

SKU_RE = re.compile(r"^[A-Z0-9][A-Z0-9_.-]{0,63}$")
MAX_PRICE_CENTS = 100_000_000


async def list_products(ctx: RequestContext) -> list[ProductRow]:
    async with ctx.services.db.connect() as conn:
        return await queries.products(conn)


async def upsert_product(ctx: RequestContext, sku: str, name: str, price_cents: int) -> ProductRow:
    await ctx.require_admin()
    errors = FieldErrors()
    if not SKU_RE.match(sku):
        errors.add("sku", "1 to 64 of A-Z 0-9 _ - . starting with a letter or digit")
    name = name.strip()
    if not 1 <= len(name) <= 200:
        errors.add("name", "must be 1 to 200 characters")
    if not 0 <= price_cents <= MAX_PRICE_CENTS:
        errors.add("priceCents", f"must be between 0 and {MAX_PRICE_CENTS}")
    errors.raise_if_any()
    async with ctx.services.db.begin() as conn:
        return await queries.upsert_product(
            conn, sku=sku, name=name, price_cents=price_cents, now=utcnow()
        )
