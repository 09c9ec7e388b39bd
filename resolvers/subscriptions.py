"""Live order status: one feed per process hands each committed change to the subscribers
allowed to see it.

The feed takes the broker's messages synchronously (a `Listener` of the `Fanout`), decodes
each event once, drops duplicates once, and offers the event to every watch in one loop:
its `orderId` filter, then `may_see` with its user as the database has it, then its
`deliver` callback. No task wakes up per subscriber and no subscriber keeps a queue or a
memory of versions of its own; what is per subscriber is a `Watch` and a callback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from infra import tracing
from models import queries
from models.rows import UserRow
from models.state import Role
from models.tables import utcnow
from resolvers import context as user_context
from resolvers import events
from resolvers.context import RequestContext, Services
from resolvers.errors import CursorExpired, DomainError, Unauthenticated
from resolvers.events import ORDER_STATUS_CHANNEL, StatusEvent
from resolvers.orders import may_see, parse_order_id, visible_order

log = logging.getLogger("order_service.subscriptions")

# Duplicates (two relays, a replay after a Redis outage) arrive within seconds of the
# original; remembering the versions sent of this many orders is plenty.
SEEN_ORDERS = 10_000
# How long an event that came ahead of a gap waits for the gap's own message before the
# feed reads the gap from the database (publishes of racing commits cross on the way).
GAP_GRACE_SECONDS = 0.1
FILL_PAGE = 500
PENDING_LIMIT = 10_000
# A resuming subscriber's replay reads the log this many events at a time.
REPLAY_PAGE = 200
_LEGACY = 1 << 62  # an event without a log id: after every cursor
_MAX_TRACKED_VERSION = 1024
_FEED = "status_feed"

# True when the event reached the subscriber (or is on its way), False when the
# subscriber cannot take it now: it is too slow and is dropped.
Deliver = Callable[[StatusEvent], bool]


class SubscriptionDropped(DomainError):
    default_message = (
        "Events came faster than this subscription read them; it was ended. "
        "Subscribe again and re-read the orders."
    )


class _SentVersions:
    """The versions sent per order, for the most recently changed orders.

    An older version that was not sent yet is still new: the relay publishes an event
    whose first publish failed seconds later, often after a newer version of the same
    order went out directly. Dropping it as stale would lose a committed change; clients
    order events by `version`.
    """

    def __init__(self, size: int) -> None:
        # A bit per version sent: an order changes a handful of times, so the mask is a
        # small int.
        self._versions: OrderedDict[int, int] = OrderedDict()
        self._size = size

    def is_new(self, order_id: int, version: int) -> bool:
        if not 0 <= version < _MAX_TRACKED_VERSION:
            return True  # no order changes that often: not worth a mask that wide
        bit = 1 << version
        sent = self._versions.get(order_id, 0)
        if sent & bit:
            return False
        self._versions[order_id] = sent | bit
        self._versions.move_to_end(order_id)
        if len(self._versions) > self._size:
            self._versions.popitem(last=False)
        return True


class _Viewer:
    """One user as the feed last read them, shared by all their watches in this process:
    10,000 subscriptions of one admin recheck the role once, not 10,000 times."""

    __slots__ = ("read_at", "reading", "user", "user_id", "watches")

    def __init__(self, user_id: int, user: UserRow) -> None:
        self.user_id = user_id
        self.user = user
        self.read_at = time.monotonic()
        self.reading: asyncio.Future[UserRow | None] | None = None
        self.watches: set[Watch] = set()


class Watch:
    """One subscriber of the feed.

    `ended` resolves when the feed ends the watch: with an error (`SubscriptionDropped`
    when it was too slow, `Unauthenticated` when its account is gone, the failure of a
    recheck) or normally when the broker stops. Events are held, in order, while the
    watch is not open yet (its access check runs) and while its user is being re-read.
    """

    __slots__ = (
        "_feed",
        "after",
        "ctx",
        "deliver",
        "ended",
        "held",
        "only",
        "opened",
        "status_only",
        "viewer",
    )

    def __init__(
        self, feed: StatusFeed, ctx: RequestContext, viewer: _Viewer, deliver: Deliver
    ) -> None:
        self._feed: StatusFeed | None = feed
        self.ctx = ctx
        self.viewer = viewer
        self.deliver = deliver
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.held: list[StatusEvent] | None = []
        self.only: int | None = None
        self.opened = False
        # Events up to this log id were sent already (by the replay), or came before.
        self.after = 0
        # orderStatusChanged: only the events that changed a status.
        self.status_only = False

    def close(self) -> None:
        """Unsubscribe (again is harmless)."""
        if self._feed is not None:
            self._feed.remove(self)
            self._feed = None
            self.ctx.services.metrics.active_subscriptions.dec()


class StatusFeed:
    """The order status events of one process, for every subscriber of the process."""

    def __init__(self, services: Services) -> None:
        self._hold_limit = services.settings.subscriber_queue_size
        # Insertion-ordered: subscribers are served in the order they came.
        self._watches: dict[Watch, None] = {}
        self._viewers: dict[int, _Viewer] = {}
        self._sent = _SentVersions(SEEN_ORDERS)
        self._closed = False
        self._services = services
        # The log, in order: every event up to `position` was dispatched (or came before
        # the feed started); `pending` holds those that came ahead of a gap, `seen` is
        # the highest id heard of. A gap is filled from the pub/sub message that comes
        # late, or after GAP_GRACE_SECONDS from the database, where it is committed.
        self.position: int | None = None
        self._pending: dict[int, StatusEvent] = {}
        self._seen = 0
        self._filler: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._watches)

    def add(self, ctx: RequestContext, user: UserRow, deliver: Deliver) -> Watch:
        """A watch that holds the events from now on until `open`."""
        assert user.id is not None
        viewer = self._viewers.get(user.id)
        if viewer is None:
            viewer = self._viewers[user.id] = _Viewer(user.id, user)
        watch = Watch(self, ctx, viewer, deliver)
        if self._closed:
            watch.ended.set_result(None)
            return watch
        viewer.watches.add(watch)
        self._watches[watch] = None
        return watch

    def open(
        self, watch: Watch, only: int | None, *, after: int = 0, status_only: bool = False
    ) -> None:
        """Start delivering, from the events held since `add`, those after log id
        `after`."""
        watch.only = only
        watch.after = after
        watch.status_only = status_only
        watch.opened = True
        if watch.viewer.reading is None:
            self._release(watch, time.monotonic())

    def remove(self, watch: Watch) -> None:
        if self._watches.pop(watch, None) is None:
            return
        viewer = watch.viewer
        viewer.watches.discard(watch)
        if not viewer.watches and self._viewers.get(viewer.user_id) is viewer:
            del self._viewers[viewer.user_id]

    async def ready(self) -> int:
        """The feed's place in the log, read from the database the first time."""
        while self.position is None:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._start())
            starting = self._starting
            try:
                await asyncio.shield(starting)
            finally:
                if starting.done() and self._starting is starting:
                    self._starting = None
        return self.position

    async def _start(self) -> None:
        async with self._services.db.connect() as conn:
            head = await queries.event_head(conn)
        if self.position is None:
            self.position = head
            self._seen = max(self._seen, head)
            for event_id in [i for i in self._pending if i <= head]:
                del self._pending[event_id]
            self._advance()

    def receive(self, message: bytes) -> None:
        if tracing.ENABLED:
            # One span per message and process, not per subscriber: the child of the span
            # that published it (the broker envelope's traceparent).
            with tracing.consume_span(message, ORDER_STATUS_CHANNEL):
                self._receive(message)
        else:
            self._receive(message)

    def _receive(self, message: bytes) -> None:
        try:
            event = StatusEvent.decode(message)
        except (ValueError, TypeError, KeyError):
            log.warning("dropping a malformed status event: %r", message[:200])
            return
        event_id = event.id
        if event_id is None:
            # From an older release: unordered. Duplicates are the same for every
            # subscriber of the process: dropped once here.
            if self._sent.is_new(event.order_id, event.version):
                self._dispatch(event)
            return
        if self.position is not None and event_id <= self.position:
            return  # sent already (a relay's second publish, a replay)
        if event_id > self._seen:
            self._seen = event_id
        if len(self._pending) >= PENDING_LIMIT:
            # Far ahead of a gap: the database has them all, read them from there.
            self._pending.clear()
        else:
            self._pending[event_id] = event
        if self.position is not None:
            self._advance()

    def _advance(self) -> None:
        """Dispatch what follows `position` without a gap; fill a gap in the background."""
        position = self.position
        assert position is not None
        pending = self._pending
        while pending:
            event = pending.pop(position + 1, None)
            if event is None:
                break
            position += 1
            self.position = position
            self._dispatch(event)
        if position < self._seen and self._filler is None and not self._closed:
            self._filler = asyncio.get_running_loop().create_task(self._fill())

    async def _fill(self) -> None:
        failures = 0
        full = False
        try:
            while self.position is not None and self.position < self._seen and not self._closed:
                if not full:
                    await asyncio.sleep(GAP_GRACE_SECONDS if not failures else 1.0)
                position = self.position
                if position >= self._seen:
                    break
                upto = min(self._pending, default=self._seen + 1) - 1
                try:
                    async with self._services.db.connect() as conn:
                        rows = await queries.scan_events(
                            conn, after=position, upto=upto, limit=FILL_PAGE
                        )
                except Exception:
                    failures += 1
                    full = False  # wait before trying again
                    if failures == 1:
                        log.warning("reading missed events failed; retrying", exc_info=True)
                    continue
                failures = 0
                full = len(rows) == FILL_PAGE
                for row in rows:
                    if row.id > self.position:
                        self.position = row.id
                        self._dispatch(StatusEvent.of_row(row))
                if len(rows) < FILL_PAGE and self.position < upto:
                    self.position = upto  # the ids between were never committed
                for event_id in [i for i in self._pending if i <= self.position]:
                    del self._pending[event_id]
                self._filler_advance()
        finally:
            self._filler = None
        if self.position is not None and self.position < self._seen and not self._closed:
            self._advance()  # a gap opened while the last pass ran

    def _filler_advance(self) -> None:
        position = self.position
        assert position is not None
        while (event := self._pending.pop(position + 1, None)) is not None:
            position += 1
            self.position = position
            self._dispatch(event)

    def _dispatch(self, event: StatusEvent) -> None:
        now = time.monotonic()
        max_age = user_context.USER_RECHECK_SECONDS  # read at use: tests shorten it
        order_id, owner_id = event.order_id, event.user_id
        event_id = event.id if event.id is not None else _LEGACY
        status = event.changed_status
        # `_offer`, with its usual case inline: this loop runs once per subscriber of the
        # process. A copy: delivering may end watches.
        for watch in tuple(self._watches):
            viewer = watch.viewer
            if watch.held is not None or viewer.reading is not None:
                self._offer(watch, event, now, max_age)
            elif (
                (watch.only is not None and watch.only != order_id)
                or event_id <= watch.after
                or (watch.status_only and not status)
            ):
                continue
            elif now - viewer.read_at > max_age:
                self._offer(watch, event, now, max_age)
            elif may_see(viewer.user, owner_id):
                try:
                    delivered = watch.deliver(event)
                except Exception as exc:
                    self._end(watch, exc)
                    continue
                if not delivered:
                    self._end(watch, SubscriptionDropped())

    def close(self) -> None:
        """The broker stops: every subscription ends normally."""
        self._closed = True
        if self._filler is not None:
            self._filler.cancel()
        for watch in tuple(self._watches):
            self._end(watch, None)

    def _offer(self, watch: Watch, event: StatusEvent, now: float, max_age: float) -> None:
        if watch.held is not None:
            self._hold(watch, event)
            return
        if watch.only is not None and watch.only != event.order_id:
            return
        if (event.id is not None and event.id <= watch.after) or (
            watch.status_only and not event.changed_status
        ):
            return
        viewer = watch.viewer
        if viewer.reading is not None or now - viewer.read_at > max_age:
            # Never decided with a stale role: held until the user is read again, while
            # everyone else's events go on.
            self._recheck(viewer, watch.ctx)
            self._hold(watch, event)
            return
        if not may_see(viewer.user, event.user_id):
            return
        try:
            delivered = watch.deliver(event)
        except Exception as exc:
            self._end(watch, exc)
            return
        if not delivered:
            self._end(watch, SubscriptionDropped())

    def _hold(self, watch: Watch, event: StatusEvent) -> None:
        if watch.held is None:
            watch.held = []
        if len(watch.held) >= self._hold_limit:
            self._end(watch, SubscriptionDropped())
        else:
            watch.held.append(event)

    def _release(self, watch: Watch, now: float) -> None:
        held, watch.held = watch.held, None
        if held:
            max_age = user_context.USER_RECHECK_SECONDS
            for event in held:
                if watch not in self._watches:
                    return
                self._offer(watch, event, now, max_age)

    def _end(self, watch: Watch, error: BaseException | None) -> None:
        self.remove(watch)
        if watch.ended.done():
            return
        if error is None:
            watch.ended.set_result(None)
        else:
            watch.ended.set_exception(error)

    def _recheck(self, viewer: _Viewer, ctx: RequestContext) -> None:
        """Read the viewer's user again, once for all their watches. Through the context's
        own `current_user` (the one rule for how stale a user may get, and reads shared
        per user): once the viewer is stale, so is any of its contexts."""
        if viewer.reading is None:
            viewer.reading = asyncio.ensure_future(ctx.current_user())
            viewer.reading.add_done_callback(lambda read: self._rechecked(viewer, read))

    def _rechecked(self, viewer: _Viewer, read: asyncio.Future[UserRow | None]) -> None:
        viewer.reading = None
        failure = _recheck_failure(read)
        if failure is not None:
            # One exception per watch: raised in many tasks, one would pile up tracebacks.
            for watch in tuple(viewer.watches):
                self._end(watch, failure())
            return
        viewer.user = read.result()  # type: ignore[assignment]  # None is a failure
        viewer.read_at = time.monotonic()
        for watch in tuple(viewer.watches):
            if watch.opened and watch.held is not None:
                # As of the read: with a recheck interval of 0 (tests) any later instant
                # would find the user stale again, and read again, for ever.
                self._release(watch, viewer.read_at)


def _recheck_failure(read: asyncio.Future[UserRow | None]) -> Callable[[], BaseException] | None:
    """How a recheck ends its viewer's watches, if it does: as each would have ended had
    it read the user itself."""
    if read.cancelled():
        cause: BaseException = asyncio.CancelledError()
    elif (exc := read.exception()) is not None:
        cause = exc
    elif read.result() is None:
        return lambda: Unauthenticated("Your account no longer exists.")
    else:
        return None

    def failure() -> BaseException:
        error = RuntimeError("re-reading the subscriber's user failed")
        error.__cause__ = cause
        return error

    return failure


def status_feed(services: Services) -> StatusFeed:
    """The process's feed, listening to the broker from the first subscription on."""
    feed: StatusFeed | None = services.extras.get(_FEED)
    if feed is None:
        feed = services.extras[_FEED] = StatusFeed(services)
        services.broker.fanout.listen(ORDER_STATUS_CHANNEL, feed)
    return feed


@dataclass(slots=True)
class _Plan:
    """What a subscription was asked for, checked."""

    user: UserRow
    only: int | None
    start: int | None  # the log id to resume after; None: from now on
    status_only: bool
    last: int = 0  # the log id the replay got to


async def _plan(
    ctx: RequestContext, raw_order_id: str | None, after: str | None, status_only: bool
) -> _Plan:
    user = await ctx.require_user()
    start = None if after is None else events.parse_cursor(after)
    only = None if raw_order_id is None else await _visible_order(ctx, user, raw_order_id)
    if start is not None:
        await _check_resumable(ctx, start)
    return _Plan(user, only, start, status_only)


async def _check_resumable(ctx: RequestContext, start: int) -> None:
    window = timedelta(days=ctx.settings.event_replay_days)
    async with ctx.services.db.connect() as conn:
        head = await queries.event_head(conn)
        written = await queries.event_time_at_or_before(conn, start) if start <= head else None
    if start > head:
        raise events.bad_cursor()  # never handed out: as malformed
    if written is None or written < utcnow() - window:
        raise CursorExpired()


async def _replayed(
    ctx: RequestContext, plan: _Plan, feed: StatusFeed
) -> AsyncIterator[StatusEvent]:
    """The events after `plan.start` this subscriber may see, oldest first, up to where
    the feed is when the replay ends (`plan.last`): a page at a time, so a week of
    events for an admin is never in memory at once and the loop is never held."""
    position = await feed.ready()
    if plan.start is None:
        plan.last = position
        return
    scanned = plan.start
    user = plan.user
    owner = None if user.role == Role.ADMIN else user.id
    while True:
        if feed.position is None:
            raise RuntimeError("the feed lost its place")  # ready() set it; nothing unsets it
        position = feed.position
        if scanned >= position:
            break
        async with ctx.services.db.connect() as conn:
            rows = await queries.scan_events(
                conn,
                after=scanned,
                upto=position,
                limit=REPLAY_PAGE,
                user_id=owner,
                order_id=plan.only,
                status_only=plan.status_only,
            )
        scanned = rows[-1].id if len(rows) == REPLAY_PAGE else position
        for row in rows:
            yield StatusEvent.of_row(row)
    plan.last = scanned


def _open(ctx: RequestContext, plan: _Plan, feed: StatusFeed, deliver: Deliver) -> Watch:
    """Live from where the replay ended: synchronous, so no event falls between."""
    watch = feed.add(ctx, plan.user, deliver)
    ctx.services.metrics.active_subscriptions.inc()
    feed.open(watch, plan.only, after=plan.last, status_only=plan.status_only)
    return watch


async def watch(
    ctx: RequestContext,
    raw_order_id: str | None,
    deliver: Deliver,
    *,
    after: str | None = None,
    replay: Callable[[StatusEvent], Awaitable[None]] | None = None,
    status_only: bool = True,
) -> Watch:
    """Committed events of one order, or of every order the caller may see, handed to
    `deliver` as they come, until `Watch.close` or until `Watch.ended` resolves.

    With `after` (a cursor), the events after it are first handed to `replay`, oldest
    first, then the live ones follow with no gap and no duplicate (docs/events.md).
    A malformed cursor is `InvalidInput`, one older than the replay window
    `CursorExpired`. `status_only`: only the events that changed a status.

    Asking for an order the caller may not see is `NotFound`, as for a read. Who may see
    an event is decided when it arrives, with the caller's role as the database has it
    (re-read at most every `USER_RECHECK_SECONDS`): a demoted admin stops seeing other
    users' orders. Events come in log order, each once.
    """
    plan = await _plan(ctx, raw_order_id, after, status_only)
    feed = status_feed(ctx.services)
    async for event in _replayed(ctx, plan, feed):
        assert replay is not None
        await replay(event)
    return _open(ctx, plan, feed, deliver)


@asynccontextmanager
async def watching(
    ctx: RequestContext, raw_order_id: str | None, deliver: Deliver
) -> AsyncIterator[Watch]:
    """`watch` for the length of a block."""
    watched = await watch(ctx, raw_order_id, deliver)
    try:
        yield watched
    finally:
        watched.close()


class _Inbox:
    """The bounded buffer of one generator subscriber (the path without a websocket)."""

    __slots__ = ("_waiter", "events", "limit")

    def __init__(self, limit: int) -> None:
        self.events: deque[StatusEvent] = deque()
        self.limit = limit
        self._waiter: asyncio.Future[None] | None = None

    def put(self, event: StatusEvent) -> bool:
        if len(self.events) >= self.limit:
            return False
        self.events.append(event)
        self.wake()
        return True

    def wake(self, *_: Any) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


async def order_status_events(
    ctx: RequestContext,
    raw_order_id: str | None,
    *,
    after: str | None = None,
    status_only: bool = True,
) -> AsyncGenerator[StatusEvent, None]:
    """`watch` as an async generator, for callers that consume events one by one."""
    plan = await _plan(ctx, raw_order_id, after, status_only)
    feed = status_feed(ctx.services)
    async for event in _replayed(ctx, plan, feed):
        yield event
    inbox = _Inbox(ctx.settings.subscriber_queue_size)
    watch = _open(ctx, plan, feed, inbox.put)
    try:
        watch.ended.add_done_callback(inbox.wake)
        while True:
            if watch.ended.done():
                watch.ended.result()  # raises what ended it, if anything
                return
            if inbox.events:
                yield inbox.events.popleft()
            else:
                await inbox.wait()
    finally:
        watch.close()


async def _visible_order(ctx: RequestContext, user: UserRow, raw_id: str) -> int:
    order_id = parse_order_id(raw_id)
    async with ctx.services.db.connect() as conn:
        await visible_order(conn, user, order_id)
    return order_id
