"""Payments: initiate against the provider; apply the provider's webhooks."""

from __future__ import annotations

from models.tables import Payment
from resolvers.context import RequestContext


async def initiate_payment(ctx: RequestContext, raw_order_id: str) -> Payment:
    raise NotImplementedError("payments land with issue 3")
