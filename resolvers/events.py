"""Status events: written to the outbox in the changing transaction, published after
commit, and republished by a relay if publishing failed (Redis down, a crash)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import orjson
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from infra.broker import BrokerUnavailable
from models.tables import OutboxEvent, as_utc, utcnow
from resolvers.context import Services

log = logging.getLogger("order_service.events")

ORDER_STATUS_CHANNEL = "order-status"
ORDER_STATUS_TOPIC = "order.status_changed"
REPLAY_MARGIN = timedelta(seconds=5)


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
    published = await _publish(services, rows)
    if published:
        try:
            async with services.db.transaction() as session:
                await _mark_published(session, published)
        except Exception:
            # Published but not marked: the relay sends it again and subscribers drop
            # the duplicate by (order, version).
            log.warning("marking %d events published failed", len(published), exc_info=True)
    return len(published)


async def _publish(services: Services, rows: list[OutboxEvent]) -> list[int]:
    """Publish in order, stopping at the first failure; the ids of the rows published."""
    published: list[int] = []
    for row in rows:
        try:
            await services.broker.publish(ORDER_STATUS_CHANNEL, row.payload.encode())
        except BrokerUnavailable as exc:
            log.warning("event %s not published (%s); the relay will retry", row.id, exc)
            break
        except Exception:
            log.warning("publishing event %s failed; the relay will retry", row.id, exc_info=True)
            break
        assert row.id is not None
        published.append(row.id)
    return published


async def _mark_published(session: AsyncSession, ids: list[int]) -> None:
    await session.execute(
        update(OutboxEvent).where(col(OutboxEvent.id).in_(ids)).values(published_at=utcnow())
    )


def _unpublished(cutoff: datetime, batch: int) -> Select[OutboxEvent]:
    return (
        select(OutboxEvent)
        .where(col(OutboxEvent.published_at).is_(None))
        .where(col(OutboxEvent.created_at) <= cutoff)
        .order_by(col(OutboxEvent.id))
        .limit(batch)
    )


async def relay_once(services: Services, *, min_age: timedelta, batch: int = 500) -> int:
    """Publish outbox rows that the request path did not (older than `min_age`).

    On PostgreSQL the rows are claimed with `FOR UPDATE SKIP LOCKED` and marked in the
    same transaction, so the relays of several instances split the work instead of all
    publishing everything. Elsewhere (SQLite: one writer anyway) it reads, publishes,
    then marks; a row published twice is dropped by subscribers as a duplicate.
    """
    cutoff = utcnow() - min_age
    if services.db.is_sqlite:
        async with services.db.read() as session:
            rows = list((await session.execute(_unpublished(cutoff, batch))).scalars())
        return await publish_rows(services, rows) if rows else 0
    async with services.db.transaction() as session:
        claim = _unpublished(cutoff, batch).with_for_update(skip_locked=True)
        rows = list((await session.execute(claim)).scalars())
        published = await _publish(services, rows) if rows else []
        if published:
            await _mark_published(session, published)
    return len(published)


async def replay_since(
    services: Services, since: datetime, *, margin: timedelta = REPLAY_MARGIN, limit: int = 2000
) -> int:
    """Hand this process's subscribers the events committed since `since` (less `margin`
    for the clocks of other instances), published or not: what they missed while the
    broker could not reach them. Subscribers drop what they already had by (order,
    version); one that subscribed since may get a change from just before it did."""
    since -= margin
    async with services.db.read() as session:
        # The newest rows by primary key, filtered here: created_at has no index.
        result = await session.execute(
            select(OutboxEvent).order_by(col(OutboxEvent.id).desc()).limit(limit)
        )
        rows = [r for r in result.scalars() if as_utc(r.created_at) >= since]
    if len(rows) == limit:
        log.warning("replaying only the last %d events after the broker came back", limit)
    for i, row in enumerate(reversed(rows), start=1):
        services.broker.fanout.dispatch(ORDER_STATUS_CHANNEL, row.payload.encode())
        if i % 50 == 0:
            await asyncio.sleep(0)  # let subscribers drain their bounded queues
    return len(rows)


async def prune_published(services: Services, *, older_than: timedelta) -> int:
    """Forget events published long ago: the outbox is not an event store."""
    async with services.db.transaction() as session:
        result = await session.execute(
            delete(OutboxEvent)
            .where(col(OutboxEvent.published_at).is_not(None))
            .where(col(OutboxEvent.published_at) < utcnow() - older_than)
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def backlog(services: Services) -> int:
    async with services.db.read() as session:
        result = await session.execute(
            select(func.count())
            .select_from(OutboxEvent)
            .where(col(OutboxEvent.published_at).is_(None))
        )
        return int(result.scalar_one())
