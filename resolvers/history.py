"""An order's history: its events from the log, and who acted, as the reader may know."""

from __future__ import annotations

from models import queries
from models.rows import UserRow
from models.state import Role
from resolvers.context import RequestContext
from resolvers.events import StatusEvent


async def of_order(ctx: RequestContext, order_id: int) -> list[StatusEvent]:
    """Every event of an order the caller has already been allowed to read, oldest
    first."""
    async with ctx.services.db.connect() as conn:
        rows = await queries.events_of_order(conn, order_id)
    return [StatusEvent.of_row(r) for r in rows]


async def actor(ctx: RequestContext, actor_id: int | None) -> UserRow | None:
    """Who acted, as the caller may know it: an admin sees everyone; anyone else sees
    themself only (never which admin acted on their order)."""
    if actor_id is None:
        return None
    viewer = await ctx.require_user()
    if viewer.id == actor_id:
        return viewer
    if viewer.role != Role.ADMIN:
        return None
    # One read per actor per request: a history names the same few people again and again.
    known = ctx.actors
    if known is None:
        known = ctx.actors = {}
    if actor_id not in known:
        async with ctx.services.db.connect() as conn:
            known[actor_id] = await queries.user_by_id(conn, actor_id)
    return known[actor_id]
