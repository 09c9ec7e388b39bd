"""The outbox relay and the replay after an outage (resolvers/events.py)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from infra.broker import BrokerUnavailable, InProcessBroker
from infra.metrics import Metrics
from infra.settings import Settings
from models import queries
from resolvers import events
from resolvers.context import Services
from server.app import build_services
from tests.conftest import USE_PG
from tests.test_broker import collect, take

pytestmark = pytest.mark.timeout(60)


class RecordingBroker(InProcessBroker):
    def __init__(self, *, delay: float = 0.0, down: bool = False) -> None:
        super().__init__()
        self.published: list[bytes] = []
        self.delay = delay
        self.down = down

    async def publish(self, channel: str, message: bytes) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        await asyncio.sleep(self.delay)
        self.published.append(message)
        await super().publish(channel, message)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    # No app: no relay task of its own to race the test's.
    services = build_services(settings.model_copy(update={"redis_url": None}), Metrics())
    services.broker = RecordingBroker()
    yield services
    await services.db.dispose()


async def _record(services: Services, count: int) -> list[bytes]:
    """`count` orders changed in one transaction; their events as they are published."""
    payloads = []
    async with services.db.begin() as conn:
        owner = await queries.insert_user(
            conn, email=f"relay-{secrets.token_hex(4)}@example.com", password_hash="x",
            role="USER", now=datetime.now(UTC),
        )  # fmt: skip
        assert owner is not None
        for _ in range(count):
            order = await queries.insert_order(
                conn, user_id=owner.id, status="PAID", client_token=secrets.token_hex(8),
                items_fingerprint="f", amount_cents=100, now=datetime.now(UTC), version=2,
            )  # fmt: skip
            assert order is not None
            event = events.StatusEvent(
                order_id=order.id,
                user_id=owner.id,
                status="PAID",
                previous_status="PENDING",
                version=2,
                changed_at=datetime.now(UTC),
            )
            row = await events.record(conn, event)
            payloads.append(events.StatusEvent.of_row(row).encode())
    return payloads


async def test_the_relay_publishes_leftovers_once_and_in_order(services: Services) -> None:
    broker = services.broker
    assert isinstance(broker, RecordingBroker)
    broker.down = True
    payloads = await _record(services, 5)
    assert await events.relay_once(services, min_age=timedelta(0)) == 0
    assert await events.backlog(services) == 5

    broker.down = False
    assert await events.relay_once(services, min_age=timedelta(hours=1)) == 0  # too young
    assert await events.relay_once(services, min_age=timedelta(0)) == 5
    assert broker.published == payloads
    assert await events.relay_once(services, min_age=timedelta(0)) == 0
    assert await events.backlog(services) == 0


@pytest.mark.postgres_only
@pytest.mark.skipif(not USE_PG, reason="FOR UPDATE SKIP LOCKED: PostgreSQL only")
async def test_concurrent_relays_split_the_rows_instead_of_both_sending_them(
    services: Services,
) -> None:
    broker = services.broker
    assert isinstance(broker, RecordingBroker)
    broker.down = True
    payloads = await _record(services, 20)
    broker.down, broker.delay = False, 0.01
    counts = await asyncio.gather(
        *(events.relay_once(services, min_age=timedelta(0), batch=5) for _ in range(4))
    )
    while await events.relay_once(services, min_age=timedelta(0), batch=5):
        pass
    assert sum(counts) <= 20
    assert sorted(broker.published) == sorted(payloads)  # each once


async def test_the_replay_hands_local_subscribers_what_was_committed_since(
    services: Services,
) -> None:
    old = await _record(services, 2)
    await asyncio.sleep(0.05)
    since = datetime.now(UTC)
    new = await _record(services, 3)
    sub = collect(services.broker, events.ORDER_STATUS_CHANNEL)
    assert await events.replay_since(services, since, margin=timedelta(0)) == 3
    got = await take(sub, 3, timeout=1)
    assert got == new
    assert not set(old) & set(got)


def test_an_event_reads_back_as_written_with_every_field() -> None:
    changed_at = datetime(2026, 12, 4, 20, 0, 0, 123456, tzinfo=UTC)
    event = events.StatusEvent(
        order_id=7, user_id=3, status="PAID", previous_status="PENDING", version=2,
        changed_at=changed_at,
    )  # fmt: skip
    wire = orjson.loads(event.encode())
    assert set(wire) == {f.name for f in fields(events.StatusEvent)}
    assert wire["changed_at"] == "2026-12-04T20:00:00.123456+00:00"
    assert events.StatusEvent.decode(event.encode()) == event
