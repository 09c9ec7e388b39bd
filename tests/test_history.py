"""Order history and resumable live events (issue 16; docs/events.md): the event log,
`Order.history`, `after` on both subscriptions, cursors in commit order."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col
from starlette.applications import Starlette

from infra.broker import BrokerUnavailable
from infra.settings import Settings
from models import queries
from models.tables import OutboxEvent, utcnow
from resolvers import events
from resolvers.context import RequestContext, Services
from resolvers.errors import CursorExpired, InvalidInput, NotFound
from resolvers.events import StatusEvent
from resolvers.subscriptions import order_status_events, status_feed
from tests.client import GraphQLClient
from tests.conftest import USE_PG
from tests.provider_server import initiate, new_order, post_webhook

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    # Writers racing: no order budget in the way.
    return settings_factory(rate_limit_orders_per_minute=0)  # type: ignore[no-any-return]


HISTORY = """
query($id: ID!) { order(id: $id) { id history {
  cursor orderId kind status previousStatus version at source actor { id email } } } }
"""


def _secret(client: GraphQLClient) -> bytes:
    return bytes(client.app.state.settings.webhook_secrets[0])


async def _history(client: GraphQLClient, token: str, order_id: str) -> list[dict[str, Any]]:
    result = await client.execute(HISTORY, {"id": order_id}, token)
    return list(result.ok()["order"]["history"])


async def _listening(services: Services) -> None:
    # A Redis broker (TEST_REDIS_URL) needs its subscription before anything is published.
    for _ in range(200):
        if getattr(services.broker, "listening", True):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the broker never listened")


async def _until_watching(services: Services, count: int) -> None:
    feed = status_feed(services)
    for _ in range(500):
        if len(feed) == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} watches, have {len(feed)}")


def _stream(
    app: Starlette,
    token: str,
    *,
    after: str | None = None,
    order_id: str | None = None,
    status_only: bool = False,
) -> AsyncGenerator[StatusEvent, None]:
    ctx = RequestContext(services=app.state.services, request_id="test")
    ctx.authenticate(f"Bearer {token}")
    return order_status_events(ctx, order_id, after=after, status_only=status_only)


async def _take(stream: AsyncGenerator[StatusEvent, None], count: int) -> list[StatusEvent]:
    return [await asyncio.wait_for(anext(stream), 10) for _ in range(count)]


async def _log(services: Services) -> list[StatusEvent]:
    async with services.db.connect() as conn:
        head = await queries.event_head(conn)
        rows = await queries.scan_events(conn, after=0, upto=head, limit=1_000_000)
    return [StatusEvent.of_row(r) for r in rows]


def _user_id(token: str) -> int:
    import jwt

    return int(jwt.decode(token, options={"verify_signature": False})["sub"])


# -- the log and Order.history -------------------------------------------------------------


async def test_every_kind_of_event_is_in_history_with_its_source_and_actor(
    client: GraphQLClient, admin_token: str, user_token: str
) -> None:
    services: Services = client.app.state.services
    secret = _secret(client)
    user_id, admin_id = _user_id(user_token), _user_id(admin_token)

    # created, a payment that fails, one that succeeds, then shipped by an admin
    paid = await new_order(client, user_token, "paid")
    failed = (await initiate(client, user_token, paid)).ok()["initiatePayment"]
    await post_webhook(client, {"payment_id": failed["id"], "order_id": paid, "status": "FAILED"}, secret)  # fmt: skip
    payment = (await initiate(client, user_token, paid)).ok()["initiatePayment"]
    response = await post_webhook(
        client, {"payment_id": payment["id"], "order_id": paid, "status": "SUCCESS"}, secret
    )
    assert response.json() == {"status": "processed"}
    (await client.move(admin_token, paid, "SHIPPED", 2)).ok()

    # a late SUCCESS after a cancel: the payment needs a refund
    late = await new_order(client, user_token, "late")
    late_payment = (await initiate(client, user_token, late)).ok()["initiatePayment"]
    (await client.move(admin_token, late, "CANCELLED", 1)).ok()
    response = await post_webhook(
        client, {"payment_id": late_payment["id"], "order_id": late, "status": "SUCCESS"}, secret
    )
    assert response.json() == {"status": "refund_needed"}
    # REFUNDED: what the refund use case records, through the one public function
    async with services.db.begin() as conn:
        order = await queries.order_by_id(conn, int(late))
        assert order is not None
        refunded = await events.record_event(
            conn, order, events.EventKind.REFUNDED, source=events.EventSource.ADMIN,
            actor_id=admin_id,
        )  # fmt: skip
    await events.after_commit(services, [refunded], {order.user_id})

    admin_view = await _history(client, admin_token, paid)
    shape = [
        (e["kind"], e["status"], e["previousStatus"], e["version"], e["source"], e["actor"])
        for e in admin_view
    ]
    me = {"id": str(user_id), "email": "user@example.com"}
    admin = {"id": str(admin_id), "email": "admin@example.com"}
    assert shape == [
        ("CREATED", "PENDING", None, 1, "USER", me),
        ("PAYMENT_INITIATED", "PENDING", None, 1, "USER", me),
        ("PAYMENT_FAILED", "PENDING", None, 1, "PAYMENT_PROVIDER", None),
        ("PAYMENT_INITIATED", "PENDING", None, 1, "USER", me),
        ("PAYMENT_SUCCEEDED", "PAID", "PENDING", 2, "PAYMENT_PROVIDER", None),
        ("STATUS_CHANGED", "SHIPPED", "PAID", 3, "ADMIN", admin),
    ]
    cursors = [e["cursor"] for e in admin_view]
    assert [events.parse_cursor(c) for c in cursors] == sorted(
        {events.parse_cursor(c) for c in cursors}
    )
    assert {e["orderId"] for e in admin_view} == {paid}

    # The customer sees the same events, but not which admin acted.
    user_view = await _history(client, user_token, paid)
    assert [e["kind"] for e in user_view] == [e["kind"] for e in admin_view]
    assert [e["cursor"] for e in user_view] == cursors
    assert user_view[-1]["source"] == "ADMIN" and user_view[-1]["actor"] is None
    assert user_view[0]["actor"] == me

    late_view = await _history(client, admin_token, late)
    assert [(e["kind"], e["status"], e["source"]) for e in late_view] == [
        ("CREATED", "PENDING", "USER"),
        ("PAYMENT_INITIATED", "PENDING", "USER"),
        ("STATUS_CHANGED", "CANCELLED", "ADMIN"),
        ("REFUND_NEEDED", "CANCELLED", "PAYMENT_PROVIDER"),
        ("REFUNDED", "CANCELLED", "ADMIN"),
    ]
    # Someone else's order has no history for this user: it is not found at all.
    other = await client.signup("other@example.com")
    result = await client.execute(HISTORY, {"id": paid}, other)
    assert result.errors[0]["extensions"]["code"] == "NOT_FOUND"


async def test_a_failed_change_writes_no_event(
    client: GraphQLClient, admin_token: str, user_token: str
) -> None:
    order_id = await new_order(client, user_token)
    stale = await client.move(admin_token, order_id, "PAID", 7)
    assert stale.errors[0]["extensions"]["code"] == "VERSION_CONFLICT"
    wrong = await client.move(admin_token, order_id, "DELIVERED", 1)
    assert wrong.errors[0]["extensions"]["code"] == "INVALID_TRANSITION"
    assert [e["kind"] for e in await _history(client, admin_token, order_id)] == ["CREATED"]


async def test_history_is_kept_past_the_replay_window_and_goes_with_its_order(
    client: GraphQLClient, user_token: str
) -> None:
    services: Services = client.app.state.services
    order_id = await new_order(client, user_token)
    async with services.db.transaction() as session:
        await session.execute(update(OutboxEvent).values(created_at=utcnow() - timedelta(days=400)))
    assert [e["kind"] for e in await _history(client, user_token, order_id)] == ["CREATED"]
    async with services.db.transaction() as session:
        from models.tables import Order

        await session.execute(Order.__table__.delete())  # type: ignore[attr-defined]
    assert await _log(services) == []


# -- cursors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["", "42", "x" * 41, "ZXYxOg", "ZXYxOi0x", "ZXYxOjAx", "ZXYxOjE=x", "éé", "ZXYyOjE"],
)
def test_malformed_cursors_are_bad_input(raw: str) -> None:
    with pytest.raises(InvalidInput):
        events.parse_cursor(raw)


def test_a_cursor_reads_back() -> None:
    for event_id in (1, 42, 10**17):
        assert events.parse_cursor(events.encode_cursor(event_id)) == event_id


async def test_malformed_unknown_and_expired_cursors_over_graphql(
    client: GraphQLClient, app: Starlette, user_token: str
) -> None:
    services: Services = app.state.services
    order_id = await new_order(client, user_token)
    [created] = await _history(client, user_token, order_id)

    for bad in ("nope", events.encode_cursor(10**9)):  # malformed; never handed out
        with pytest.raises(InvalidInput):
            await anext(_stream(app, user_token, after=bad))
    # Someone else's order: not found, before anything is replayed.
    other = await client.signup("other@example.com")
    with pytest.raises(NotFound):
        await anext(_stream(app, other, after=created["cursor"], order_id=order_id))

    async with services.db.transaction() as session:
        await session.execute(
            update(OutboxEvent)
            .where(col(OutboxEvent.id) == events.parse_cursor(created["cursor"]))
            .values(created_at=utcnow() - timedelta(days=8))
        )
    with pytest.raises(CursorExpired):
        await anext(_stream(app, user_token, after=created["cursor"]))


# -- scan then live ------------------------------------------------------------------------


async def test_resume_after_a_cursor_from_history_and_from_a_live_event(
    client: GraphQLClient, app: Starlette, admin_token: str, user_token: str
) -> None:
    services: Services = app.state.services
    await _listening(services)
    order_id = await new_order(client, user_token)
    [created] = await _history(client, user_token, order_id)
    (await client.move(admin_token, order_id, "PAID", 1)).ok()
    (await client.move(admin_token, order_id, "SHIPPED", 2)).ok()

    # From history: the two changes since, then live.
    stream = _stream(app, user_token, after=created["cursor"])
    replayed = await _take(stream, 2)
    assert [(e.kind, e.status) for e in replayed] == [
        ("STATUS_CHANGED", "PAID"),
        ("STATUS_CHANGED", "SHIPPED"),
    ]
    (await client.move(admin_token, order_id, "DELIVERED", 3)).ok()
    [live] = await _take(stream, 1)
    assert (live.status, live.version) == ("DELIVERED", 4)
    await stream.aclose()

    # From a live event: nothing before it again, everything after it.
    second = await new_order(client, user_token, "t2")
    stream = _stream(app, user_token, after=events.encode_cursor(replayed[0].id or 0))
    got = await _take(stream, 3)
    assert [(e.order_id, e.kind) for e in got] == [
        (int(order_id), "STATUS_CHANGED"),
        (int(order_id), "STATUS_CHANGED"),
        (int(second), "CREATED"),
    ]
    await stream.aclose()

    # orderStatusChanged: only the events that changed a status, same cursors.
    stream = _stream(app, user_token, after=created["cursor"], status_only=True)
    got = await _take(stream, 3)
    assert [e.status for e in got] == ["PAID", "SHIPPED", "DELIVERED"]
    (await client.move(admin_token, second, "CANCELLED", 1)).ok()
    [live] = await _take(stream, 1)
    assert (live.order_id, live.status) == (int(second), "CANCELLED")
    await stream.aclose()


async def test_resume_on_another_instance(client_factory: Any) -> None:
    first = await client_factory()
    second = await client_factory()
    user = await first.signup("resume@example.com")
    admin = await first.make_admin("boss@example.com")
    order_id = await new_order(first, user)
    [created] = await _history(first, user, order_id)
    (await first.move(admin, order_id, "PAID", 1)).ok()
    (await first.move(admin, order_id, "SHIPPED", 2)).ok()
    stream = _stream(second.app, user, after=created["cursor"])
    got = await _take(stream, 2)
    assert [e.status for e in got] == ["PAID", "SHIPPED"]
    await stream.aclose()


async def test_events_lost_by_pub_sub_are_read_from_the_log(
    client: GraphQLClient, app: Starlette, admin_token: str, user_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Redis down while events are written: a live subscriber gets them from the log once
    the next event comes through (or the relay republishes them), in order, once; and a
    subscriber resuming after a cursor from before the outage gets them too."""
    services: Services = app.state.services
    await _listening(services)
    order_id = await new_order(client, user_token)
    [created] = await _history(client, user_token, order_id)
    stream = _stream(app, admin_token)
    waiting = asyncio.ensure_future(_take(stream, 4))
    await _until_watching(services, 1)
    broker = services.broker
    real_publish = broker.publish

    async def down(channel: str, message: bytes) -> None:
        raise BrokerUnavailable("down for the test")

    monkeypatch.setattr(broker, "publish", down)
    for version, target in enumerate(("PAID", "SHIPPED", "DELIVERED"), start=1):
        (await client.move(admin_token, order_id, target, version)).ok()
    monkeypatch.setattr(broker, "publish", real_publish)
    await new_order(client, user_token, "after-the-outage")
    got = await waiting
    assert [(e.kind, e.status) for e in got] == [
        ("STATUS_CHANGED", "PAID"),
        ("STATUS_CHANGED", "SHIPPED"),
        ("STATUS_CHANGED", "DELIVERED"),
        ("CREATED", "PENDING"),
    ]
    await stream.aclose()
    resumed = _stream(app, user_token, after=created["cursor"])
    assert [e.id for e in await _take(resumed, 4)] == [e.id for e in got]
    await resumed.aclose()


# -- exactly once across the seam, writers racing -----------------------------------------


async def _writer(client: GraphQLClient, admin: str, token: str, name: str, rng: random.Random) -> None:  # fmt: skip
    for n in range(3):
        order_id = await new_order(client, token, f"{name}-{n}")
        version = 1
        for target in rng.choice([["PAID", "SHIPPED"], ["CANCELLED"], []]):
            (await client.move(admin, order_id, target, version)).ok()
            version += 1


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("as_admin", [True, False])
async def test_what_a_resuming_client_gets_is_the_log_exactly_once(
    client: GraphQLClient, app: Starlette, admin_token: str, user_token: str,
    seed: int, as_admin: bool,
) -> None:  # fmt: skip
    """Property: with 20 writers racing, a client that disconnects at random points and
    resumes after the last cursor it got receives, concatenated, exactly the log as it
    may see it (every event, in order, none twice)."""
    services: Services = app.state.services
    await _listening(services)
    rng = random.Random(seed)
    watcher = admin_token if as_admin else user_token
    others = [await client.signup(f"w{i}-{seed}@example.com") for i in range(4)]
    start_order = await new_order(client, watcher, "start")
    [start] = await _history(client, watcher, start_order)

    writers = asyncio.gather(
        *(
            _writer(
                client,
                admin_token,
                rng.choice([user_token, *others]),
                f"w{i}",
                random.Random(rng.random()),
            )
            for i in range(20)
        )
    )
    received: list[StatusEvent] = []
    cursor = start["cursor"]
    owner = None if as_admin else _user_id(user_token)

    async def expected() -> list[int]:
        log = await _log(services)
        after = events.parse_cursor(start["cursor"])
        return [e.id or 0 for e in log if e.id and e.id > after and owner in (None, e.user_id)]

    while True:
        stream = _stream(app, watcher, after=cursor)
        for _ in range(rng.randint(1, 12)):
            try:
                event = await asyncio.wait_for(anext(stream), 0.5 if writers.done() else 10)
            except TimeoutError:
                break
            received.append(event)
            cursor = events.encode_cursor(event.id or 0)
        await stream.aclose()  # a disconnect
        if writers.done() and [e.id for e in received] == await expected():
            break
        if writers.done() and len(received) > len(await expected()):
            break
        await asyncio.sleep(rng.choice([0, 0, 0.01]))
    await writers
    assert [e.id for e in received] == await expected()
    assert all(owner in (None, e.user_id) for e in received)


@pytest.mark.skipif(not USE_PG, reason="racing transactions: PostgreSQL (SQLite has one writer)")
async def test_a_visible_cursor_never_has_an_earlier_one_still_to_commit(
    client: GraphQLClient, user_token: str
) -> None:
    """The trap: ids handed out at insert, transactions committing in another order. A
    reader that sees event N must already see every event before N that will ever
    commit. Writers hold their transactions open a random while after writing their
    event; a reader keeps reading the head and everything up to it; in the end, no event
    turned up below a head that had been read without it."""
    services: Services = client.app.state.services
    order_id = int(await new_order(client, user_token))
    rng = random.Random(16)
    stop = asyncio.Event()
    snapshots: list[tuple[int, set[int]]] = []

    async def write(pause: float) -> None:
        async with services.db.begin() as conn:
            order = await queries.order_by_id(conn, order_id)
            assert order is not None
            await events.record_event(
                conn, order, events.EventKind.PAYMENT_FAILED,
                source=events.EventSource.PAYMENT_PROVIDER,
            )  # fmt: skip
            await asyncio.sleep(pause)

    async def read() -> None:
        while not stop.is_set():
            async with services.db.connect() as conn:
                head = await queries.event_head(conn)
                rows = await queries.scan_events(conn, after=0, upto=head, limit=100_000)
            snapshots.append((head, {r.id for r in rows}))
            await asyncio.sleep(0)

    reader = asyncio.ensure_future(read())
    await asyncio.gather(*(write(rng.choice([0, 0.001, 0.01, 0.03])) for _ in range(40)))
    stop.set()
    await reader
    final = {e.id for e in await _log(services)}
    assert len(snapshots) > 3
    for head, seen in snapshots:
        assert {i for i in final if i is not None and i <= head} == seen


async def test_a_long_replay_reads_the_log_a_page_at_a_time(
    client: GraphQLClient, app: Starlette, admin_token: str, user_token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A replay of many events never holds more than a page in memory, and other work goes
    on between its pages (the loop is not held)."""
    from resolvers import subscriptions

    monkeypatch.setattr(subscriptions, "REPLAY_PAGE", 50)
    services: Services = app.state.services
    order_id = await new_order(client, user_token)
    [created] = await _history(client, user_token, order_id)
    async with services.db.begin() as conn:
        order = await queries.order_by_id(conn, int(order_id))
        assert order is not None
        for _ in range(300):
            await events.record_event(
                conn, order, events.EventKind.PAYMENT_FAILED,
                source=events.EventSource.PAYMENT_PROVIDER,
            )  # fmt: skip
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    running = asyncio.ensure_future(ticker())
    stream = _stream(app, admin_token, after=created["cursor"])
    with services.db.recording_statements() as statements:
        got = await _take(stream, 300)
    running.cancel()
    await stream.aclose()
    assert [e.kind for e in got] == ["PAYMENT_FAILED"] * 300
    assert len({e.id for e in got}) == 300
    scans = [s for s in statements if "ORDER BY outbox.id" in s and "LIMIT" in s]
    assert len(scans) >= 300 // 50, statements
    assert ticks > 300 // 50
