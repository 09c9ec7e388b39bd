"""Status events: written to the outbox in the changing transaction, published after
commit, and republished by a relay if publishing failed (Redis down, a crash).

Publishing happens on the request path, right after commit; marking the rows published is
batched (`mark_published_forever`). A row published but never marked (a crash in between)
is published again by the relay, and subscribers drop the duplicate by (order, version).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from infra import tracing
from infra.broker import BrokerUnavailable
from models import queries
from models.rows import OutboxRow
from models.sql import Connection
from models.tables import as_utc, utcnow
from resolvers.context import Services

log = logging.getLogger("order_service.events")

ORDER_STATUS_CHANNEL = "order-status"
ORDER_STATUS_TOPIC = "order.status_changed"
REPLAY_MARGIN = timedelta(seconds=5)
# Rows published on the request path are marked published together, this often: one
# UPDATE for a burst instead of a transaction per event (the relay's minimum age is far
# longer, so it does not send them again meanwhile).
MARK_EVERY_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class StatusEvent:
    order_id: int
    user_id: int
    status: str
    previous_status: str
    version: int
    changed_at: datetime

    def encode(self) -> bytes:
        # Field by field: dataclasses.asdict deep-copies every value (~2% of a webhook).
        return orjson.dumps(
            {
                "order_id": self.order_id,
                "user_id": self.user_id,
                "status": self.status,
                "previous_status": self.previous_status,
                "version": self.version,
                "changed_at": as_utc(self.changed_at).isoformat(),
            }
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> StatusEvent:
        data = orjson.loads(raw)
        data.pop("_trace", None)  # the broker envelope's trace context (infra/tracing.py)
        data["changed_at"] = datetime.fromisoformat(data["changed_at"])
        return cls(**data)


def order_cache_scopes(user_ids: set[int]) -> list[str]:
    """Cache scopes a change to these users' orders makes stale."""
    return ["orders:all", *(f"orders:user:{u}" for u in sorted(user_ids))]


async def record(conn: Connection, event: StatusEvent) -> OutboxRow:
    """The event's outbox row, in the caller's transaction."""
    return await queries.insert_outbox(conn, ORDER_STATUS_TOPIC, event.encode().decode(), utcnow())


async def after_commit(services: Services, rows: list[OutboxRow], user_ids: set[int]) -> None:
    """Make a committed change visible: new cache generations, then the events.

    Failures here never undo the committed change: the relay publishes what is left.
    """
    try:
        await services.cache.bump(order_cache_scopes(user_ids))
    except Exception:
        log.warning("cache generation bump failed", exc_info=True)
    if rows:
        await publish_rows(services, rows)


async def publish_rows(services: Services, rows: list[OutboxRow]) -> int:
    """Publish now; the rows are marked published by the next flush."""
    published = await _publish(services, rows)
    services.published.add(published)
    return len(published)


async def _publish(services: Services, rows: list[OutboxRow], *, relay: bool = False) -> list[int]:
    """Publish in order, stopping at the first failure; the ids of the rows published."""
    published: list[int] = []
    for row in rows:
        try:
            if tracing.ENABLED:
                # The message's envelope carries the span's traceparent to the subscribers.
                with tracing.publish_span(
                    ORDER_STATUS_CHANNEL, relay=relay, event_id=row.id
                ) as wrap:
                    message = wrap(row.payload.encode())
                    await services.broker.publish(ORDER_STATUS_CHANNEL, message)
            else:
                await services.broker.publish(ORDER_STATUS_CHANNEL, row.payload.encode())
        except BrokerUnavailable as exc:
            log.warning("event %s not published (%s); the relay will retry", row.id, exc)
            break
        except Exception:
            log.warning("publishing event %s failed; the relay will retry", row.id, exc_info=True)
            break
        published.append(row.id)
    return published


async def flush_published(services: Services) -> int:
    """Mark every row published since the last flush, in one statement."""
    ids = services.published.take()
    if not ids:
        return 0
    try:
        async with services.db.begin() as conn:
            await queries.mark_published(conn, ids, utcnow())
    except Exception:
        # Published but not marked: the relay sends them again and subscribers drop
        # the duplicates by (order, version).
        log.warning("marking %d events published failed", len(ids), exc_info=True)
    return len(ids)


async def mark_published_forever(services: Services) -> None:
    marks = services.published
    while True:
        await marks.wait()
        await asyncio.sleep(MARK_EVERY_SECONDS)
        await flush_published(services)


async def relay_once(services: Services, *, min_age: timedelta, batch: int = 500) -> int:
    """Publish outbox rows that the request path did not (older than `min_age`).

    On PostgreSQL the rows are claimed with `FOR UPDATE SKIP LOCKED` and marked in the
    same transaction, so the relays of several instances split the work instead of all
    publishing everything. Elsewhere (SQLite: one writer anyway) it reads, publishes,
    then marks; a row published twice is dropped by subscribers as a duplicate.
    """
    cutoff = utcnow() - min_age
    # What this process published itself is marked first, so it is not sent again.
    await flush_published(services)
    db = services.db
    if db.is_sqlite:
        async with db.connect() as conn:
            rows = await queries.unpublished(conn, cutoff, batch)
        published = await _publish(services, rows, relay=True) if rows else []
        if published:
            async with db.begin() as conn:
                await queries.mark_published(conn, published, utcnow())
        return len(published)
    async with db.begin() as conn:
        rows = await queries.unpublished(conn, cutoff, batch, claim=True)
        published = await _publish(services, rows, relay=True) if rows else []
        if published:
            await queries.mark_published(conn, published, utcnow())
    return len(published)


async def replay_since(
    services: Services, since: datetime, *, margin: timedelta = REPLAY_MARGIN, limit: int = 2000
) -> int:
    """Hand this process's subscribers the events committed since `since` (less `margin`
    for the clocks of other instances), published or not: what they missed while the
    broker could not reach them. Subscribers drop what they already had by (order,
    version); one that subscribed since may get a change from just before it did."""
    since -= margin
    async with services.db.connect() as conn:
        newest = await queries.newest_outbox(conn, limit)
    rows = [r for r in newest if r.created_at >= since]
    if len(rows) == limit:
        log.warning("replaying only the last %d events after the broker came back", limit)
    for i, row in enumerate(reversed(rows), start=1):
        services.broker.fanout.dispatch(ORDER_STATUS_CHANNEL, row.payload.encode())
        if i % 50 == 0:
            await asyncio.sleep(0)  # let subscribers drain their bounded queues
    return len(rows)


async def prune_published(services: Services, *, older_than: timedelta) -> int:
    """Forget events published long ago: the outbox is not an event store."""
    async with services.db.begin() as conn:
        return await queries.prune_outbox(conn, utcnow() - older_than)


async def backlog(services: Services) -> int:
    async with services.db.connect() as conn:
        return await queries.outbox_backlog(conn)
