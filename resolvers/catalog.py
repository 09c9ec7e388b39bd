"""The product catalog."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlmodel import col

from models.dialect import upsert
from models.tables import Product, utcnow
from resolvers.context import RequestContext
from resolvers.errors import FieldErrors

SKU_RE = re.compile(r"^[A-Z0-9][A-Z0-9_.-]{0,63}$")
MAX_PRICE_CENTS = 100_000_000


async def list_products(ctx: RequestContext) -> list[Product]:
    async with ctx.services.db.read() as session:
        result = await session.execute(select(Product).order_by(col(Product.sku)))
        return list(result.scalars())


async def upsert_product(ctx: RequestContext, sku: str, name: str, price_cents: int) -> Product:
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
    values = {"sku": sku, "name": name, "price_cents": price_cents, "updated_at": utcnow()}
    async with ctx.services.db.transaction() as session:
        stmt = upsert(session, Product, values, index_elements=["sku"])
        await session.execute(stmt)
    return Product.model_validate(values)
