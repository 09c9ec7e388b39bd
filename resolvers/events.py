"""Status events: written to the outbox in the changing transaction, published after
commit, and republished by a relay if publishing failed (Redis down, a crash).

Publishing happens on the request path, right after commit; marking the rows published is
batched (`mark_published_forever`). A row published but never marked (a crash in between)
is published again by the relay, and subscribers drop the duplicate by (order, version).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import orjson

from infra import tracing
from infra.broker import BrokerUnavailable
from models import queries
from models.rows import OrderRow, OutboxRow, UserRow
from models.sql import Connection
from models.state import Role
from models.tables import as_utc, utcnow
from resolvers.context import Services
from resolvers.errors import FieldError, InvalidInput

log = logging.getLogger("order_service.events")

ORDER_STATUS_CHANNEL = "order-status"
ORDER_STATUS_TOPIC = "order.status_changed"
REPLAY_MARGIN = timedelta(seconds=5)
# Rows published on the request path are marked published together, this often: one
# UPDATE for a burst instead of a transaction per event (the relay's minimum age is far
# longer, so it does not send them again meanwhile).
MARK_EVERY_SECONDS = 0.05


class EventKind(StrEnum):
    CREATED = "CREATED"
    STATUS_CHANGED = "STATUS_CHANGED"
    PAYMENT_INITIATED = "PAYMENT_INITIATED"
    PAYMENT_SUCCEEDED = "PAYMENT_SUCCEEDED"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    REFUND_NEEDED = "REFUND_NEEDED"
    REFUNDED = "REFUNDED"


class EventSource(StrEnum):
    USER = "USER"
    ADMIN = "ADMIN"
    PAYMENT_PROVIDER = "PAYMENT_PROVIDER"
    SYSTEM = "SYSTEM"


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One event of an order as it travels: in the log, on the broker, to subscribers.

    `id` is its place in the log (the cursor); None for an event not written yet, or one
    published by an older release (delivered unordered, deduplicated by version).
    `previous_status` is set when the event changed the order's status.
    """

    order_id: int
    user_id: int
    status: str
    previous_status: str | None
    version: int
    changed_at: datetime
    id: int | None = None
    kind: str = EventKind.STATUS_CHANGED.value
    source: str = EventSource.SYSTEM.value
    actor_id: int | None = None

    @property
    def changed_status(self) -> bool:
        return self.previous_status is not None

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
                "id": self.id,
                "kind": self.kind,
                "source": self.source,
                "actor_id": self.actor_id,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> StatusEvent:
        data = orjson.loads(raw)
        data.pop("_trace", None)  # the broker envelope's trace context (infra/tracing.py)
        data["changed_at"] = datetime.fromisoformat(data["changed_at"])
        return cls(**data)

    @classmethod
    def of_row(cls, row: OutboxRow) -> StatusEvent:
        return cls(
            order_id=row.order_id,
            user_id=row.user_id,
            status=row.status,
            previous_status=row.previous_status,
            version=row.version,
            changed_at=as_utc(row.created_at),
            id=row.id,
            kind=row.kind,
            source=row.source,
            actor_id=row.actor_id,
        )


# -- cursors -----------------------------------------------------------------------------

_CURSOR_PREFIX = "ev1:"
_MAX_CURSOR_CHARS = 40


def encode_cursor(event_id: int) -> str:
    """The opaque cursor of an event: its log id, wrapped so clients do not build them."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{event_id}".encode()).decode().rstrip("=")


def parse_cursor(raw: str) -> int:
    """The log id a cursor names; `InvalidInput` (BAD_USER_INPUT) if it is not one."""
    if not isinstance(raw, str) or not 0 < len(raw) <= _MAX_CURSOR_CHARS or not raw.isascii():
        raise bad_cursor()
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise bad_cursor() from None
    digits = text.removeprefix(_CURSOR_PREFIX)
    if digits == text or not digits.isdigit() or len(digits) > 18:
        raise bad_cursor()
    event_id = int(digits)
    if event_id <= 0 or encode_cursor(event_id) != raw:
        raise bad_cursor()  # one spelling per cursor
    return event_id


def bad_cursor() -> InvalidInput:
    return InvalidInput([FieldError("after", "not a cursor this service handed out")])


def source_of(user: UserRow) -> EventSource:
    """How an event made by a signed-in person is sourced: by their role."""
    return EventSource.ADMIN if user.role == Role.ADMIN.value else EventSource.USER


def order_cache_scopes(user_ids: set[int]) -> list[str]:
    """Cache scopes a change to these users' orders makes stale."""
    return ["orders:all", *(f"orders:user:{u}" for u in sorted(user_ids))]


async def record(
    conn: Connection,
    event: StatusEvent,
    *,
    kind: EventKind | None = None,
    source: EventSource | None = None,
    actor_id: int | None = None,
) -> OutboxRow:
    """Write `event` to the log in the caller's transaction (`kind`, `source`,
    `actor_id` override the event's own). Call it last in the transaction: on
    PostgreSQL it takes the log's lock, held until the commit, so that ids are handed
    out in commit order (docs/events.md)."""
    if kind is not None or source is not None or actor_id is not None:
        event = dataclasses.replace(
            event,
            kind=(kind or event.kind),
            source=(source or event.source),
            actor_id=actor_id if actor_id is not None else event.actor_id,
        )
    return await queries.insert_outbox(
        conn,
        ORDER_STATUS_TOPIC,
        event.encode().decode(),
        utcnow(),
        order_id=event.order_id,
        user_id=event.user_id,
        kind=str(event.kind),
        source=str(event.source),
        actor_id=event.actor_id,
        status=event.status,
        previous_status=event.previous_status,
        version=event.version,
    )


async def record_event(
    conn: Connection,
    order: OrderRow,
    kind: EventKind,
    *,
    source: EventSource,
    actor_id: int | None = None,
    previous_status: str | None = None,
) -> OutboxRow:
    """Record one event of any kind for `order` (the order as it is after the change),
    inside the caller's transaction: the one way to add to an order's history.

    `previous_status` only when the change moved the order's status; `actor_id` for a
    signed-in person (`source` USER or ADMIN, see `source_of`), None for the payment
    provider and the system. Call it as the last write of the transaction, and hand the
    returned row to `after_commit` once committed so that subscribers get it now (the
    relay publishes it otherwise). E.g. a refund: `record_event(conn, order,
    EventKind.REFUNDED, source=EventSource.ADMIN, actor_id=admin.id)`.
    """
    return await record(
        conn,
        StatusEvent(
            order_id=order.id,
            user_id=order.user_id,
            status=order.status,
            previous_status=previous_status,
            version=order.version,
            changed_at=utcnow(),
            kind=kind.value,
            source=source.value,
            actor_id=actor_id,
        ),
    )


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
            payload = StatusEvent.of_row(row).encode()
            if tracing.ENABLED:
                # The message's envelope carries the span's traceparent to the subscribers.
                with tracing.publish_span(
                    ORDER_STATUS_CHANNEL, relay=relay, event_id=row.id
                ) as wrap:
                    await services.broker.publish(ORDER_STATUS_CHANNEL, wrap(payload))
            else:
                await services.broker.publish(ORDER_STATUS_CHANNEL, payload)
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
        services.broker.fanout.dispatch(ORDER_STATUS_CHANNEL, StatusEvent.of_row(row).encode())
        if i % 50 == 0:
            await asyncio.sleep(0)  # let subscribers drain their bounded queues
    return len(rows)


async def backlog(services: Services) -> int:
    async with services.db.connect() as conn:
        return await queries.outbox_backlog(conn)
