"""Status events: written to the outbox in the changing transaction, published after
commit, and republished by a relay if publishing failed (Redis down, a crash)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.tables import OutboxEvent, as_utc, utcnow
from resolvers.context import Services

log = logging.getLogger("order_service.events")

ORDER_STATUS_CHANNEL = "order-status"
ORDER_STATUS_TOPIC = "order.status_changed"


@dataclass(frozen=True, slots=True)
class StatusEvent:
    order_id: int
    user_id: int
    status: str
    previous_status: str
    version: int
    changed_at: datetime

    def encode(self) -> bytes:
        data = asdict(self)
        data["changed_at"] = as_utc(self.changed_at).isoformat()
        return orjson.dumps(data)

    @classmethod
    def decode(cls, raw: bytes | str) -> StatusEvent:
        data = orjson.loads(raw)
        data["changed_at"] = datetime.fromisoformat(data["changed_at"])
        return cls(**data)


def order_cache_scopes(user_ids: set[int]) -> list[str]:
    """Cache scopes a change to these users' orders makes stale."""
    return ["orders:all", *(f"orders:user:{u}" for u in sorted(user_ids))]


async def record(session: AsyncSession, event: StatusEvent) -> OutboxEvent:
    row = OutboxEvent(topic=ORDER_STATUS_TOPIC, payload=event.encode().decode())
    session.add(row)
    await session.flush()
    return row


async def after_commit(services: Services, rows: list[OutboxEvent], user_ids: set[int]) -> None:
    """Make a committed change visible: new cache generations, then the events.

    Failures here never undo the committed change: the relay publishes what is left.
    """
    try:
        await services.cache.bump(order_cache_scopes(user_ids))
    except Exception:
        log.warning("cache generation bump failed", exc_info=True)
    if rows:
        await publish_rows(services, rows)


async def publish_rows(services: Services, rows: list[OutboxEvent]) -> int:
    published: list[int] = []
    for row in rows:
        try:
            await services.broker.publish(ORDER_STATUS_CHANNEL, row.payload.encode())
        except Exception:
            log.warning("publishing event %s failed; the relay will retry", row.id, exc_info=True)
            break
        assert row.id is not None
        published.append(row.id)
    if published:
        try:
            async with services.db.transaction() as session:
                await session.execute(
                    update(OutboxEvent)
                    .where(col(OutboxEvent.id).in_(published))
                    .values(published_at=utcnow())
                )
        except Exception:
            # Published but not marked: the relay sends it again and subscribers drop
            # the duplicate by (order, version).
            log.warning("marking %d events published failed", len(published), exc_info=True)
    return len(published)


async def relay_once(services: Services, *, min_age: timedelta, batch: int = 500) -> int:
    """Publish outbox rows that the request path did not (older than `min_age`)."""
    cutoff = utcnow() - min_age
    async with services.db.read() as session:
        result = await session.execute(
            select(OutboxEvent)
            .where(col(OutboxEvent.published_at).is_(None))
            .where(col(OutboxEvent.created_at) <= cutoff)
            .order_by(col(OutboxEvent.id))
            .limit(batch)
        )
        rows = list(result.scalars())
    if not rows:
        return 0
    return await publish_rows(services, rows)


async def backlog(services: Services) -> int:
    async with services.db.read() as session:
        result = await session.execute(
            select(func.count())
            .select_from(OutboxEvent)
            .where(col(OutboxEvent.published_at).is_(None))
        )
        return int(result.scalar_one())
