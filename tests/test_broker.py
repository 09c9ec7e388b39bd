"""The event broker: fan-out to listeners, and Redis pub/sub through outages.

The Redis tests own a private redis-server (tests/redis_server.py), so they run on every
backend and can stop it without disturbing anyone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from infra.broker import Broker, BrokerUnavailable, Fanout, InProcessBroker, RedisBroker
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


class Collector:
    """A listener that keeps what it is handed, for a test to take."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = False

    def receive(self, message: bytes) -> None:
        self.queue.put_nowait(message)

    def close(self) -> None:
        self.closed = True

    def __len__(self) -> int:
        return 1


def collect(broker: Broker, channel: str) -> Collector:
    collector = Collector()
    broker.fanout.listen(channel, collector)
    return collector


async def take(sub: Collector, n: int, timeout: float = 5.0) -> list[bytes]:
    return [await asyncio.wait_for(sub.queue.get(), timeout) for _ in range(n)]


async def nothing_more(sub: Collector, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.queue.get(), seconds)


async def test_in_process_messages_reach_the_listeners_of_their_channel_in_order() -> None:
    broker = InProcessBroker()
    mine, other = collect(broker, "c"), collect(broker, "d")
    for i in range(3):
        await broker.publish("c", b"%d" % i)
    assert await take(mine, 3) == [b"0", b"1", b"2"]
    await nothing_more(other, 0.05)
    await broker.stop()
    assert mine.closed and other.closed


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def broker(redis_server: RedisServer) -> AsyncIterator[RedisBroker]:
    broker = RedisBroker(redis_server.url_for(2), prefix="broker-test:")
    await broker.start()
    await until(lambda: broker.listening)
    yield broker
    await broker.stop()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def client_names(server: RedisServer) -> list[str]:
    admin = aioredis.Redis.from_url(server.url)
    try:
        clients = await admin.client_list()
    finally:
        await admin.aclose()
    return [c["name"] for c in clients]


async def test_messages_cross_brokers_on_one_channel_namespace_only(
    redis_server: RedisServer, broker: RedisBroker
) -> None:
    others = [
        RedisBroker(redis_server.url_for(2), prefix="broker-test:"),  # same namespace
        RedisBroker(redis_server.url_for(3), prefix="broker-test:"),  # another database
        RedisBroker(redis_server.url_for(2), prefix="someone-else:"),
    ]
    for other in others:
        await other.start()
    try:
        await until(lambda: all(o.listening for o in others))
        subs = [collect(o, "orders") for o in others]
        await broker.publish("orders", b"hello")
        assert await take(subs[0], 1) == [b"hello"]
        await nothing_more(subs[1])
        await nothing_more(subs[2], 0.05)
    finally:
        for other in others:
            await other.stop()


async def test_one_redis_subscription_per_process_whatever_the_subscribers(
    redis_server: RedisServer, broker: RedisBroker
) -> None:
    subs = [collect(broker, "orders") for _ in range(50)]
    await broker.publish("orders", b"to all")
    for sub in subs:
        assert await take(sub, 1) == [b"to all"]
    names = await client_names(redis_server)
    assert names.count(f"{broker.client_name}-sub") == 1
    assert names.count(f"{broker.client_name}-pub") == 1
    assert broker.fanout.count() == 50


async def test_publishing_while_redis_is_down_fails_fast(
    redis_server: RedisServer, broker: RedisBroker
) -> None:
    redis_server.stop()
    for _ in range(5):
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await broker.publish("orders", b"lost?")
        assert time.monotonic() - started < 0.3
    assert not await broker.healthy()


async def test_publishing_to_a_hung_redis_times_out_quickly(
    redis_server: RedisServer, broker: RedisBroker
) -> None:
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await broker.publish("orders", b"stuck?")
        assert time.monotonic() - started < 2
        started = time.monotonic()
        assert not await broker.healthy()
        assert time.monotonic() - started < 2
    finally:
        redis_server.resume()


async def test_the_listener_comes_back_after_an_outage_and_asks_for_a_replay(
    redis_server: RedisServer,
) -> None:
    replays: list[datetime] = []

    async def replay(since: datetime) -> None:
        replays.append(since)

    broker = RedisBroker(redis_server.url, on_reconnect=replay)
    await broker.start()
    try:
        await until(lambda: broker.listening)
        sub = collect(broker, "orders")
        await broker.publish("orders", b"before")
        assert await take(sub, 1) == [b"before"]

        redis_server.stop()
        went_down = datetime.now(UTC)
        await until(lambda: not broker.listening)
        await asyncio.sleep(1.5)  # a few failed reconnects
        redis_server.start()
        started = time.monotonic()
        await until(lambda: broker.listening)
        assert time.monotonic() - started < 3
        assert len(replays) == 1 and replays[0] <= went_down
        assert await broker.healthy()

        await until(lambda: time.monotonic() > broker._fail_until)
        await broker.publish("orders", b"after")
        assert await take(sub, 1) == [b"after"]
        assert not sub.closed  # the subscriber never noticed
    finally:
        await broker.stop()


async def test_stopping_leaves_no_task_and_no_connection(redis_server: RedisServer) -> None:
    tasks_before = len(asyncio.all_tasks())
    broker = RedisBroker(redis_server.url)
    await broker.start()
    await until(lambda: broker.listening)
    sub = collect(broker, "orders")
    await broker.publish("orders", b"x")
    await take(sub, 1)
    await broker.stop()
    assert len(asyncio.all_tasks()) == tasks_before
    assert sub.closed
    names = await client_names(redis_server)
    assert not [n for n in names if n.startswith(broker.client_name)]


class _Listener:
    def __init__(self, subscribers: int, *, fails: bool = False) -> None:
        self.got: list[bytes] = []
        self.subscribers = subscribers
        self.fails = fails
        self.closed = False

    def receive(self, message: bytes) -> None:
        self.got.append(message)
        if self.fails:
            raise RuntimeError("a bug in a listener")

    def close(self) -> None:
        self.closed = True

    def __len__(self) -> int:
        return self.subscribers


def test_listeners_take_every_message_at_once_and_a_failing_one_stops_no_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fanout = Fanout()
    broken, feed = _Listener(2, fails=True), _Listener(3)
    fanout.listen("c", broken)
    fanout.listen("c", feed)
    assert fanout.count() == 2 + 3  # a listener counts the subscribers it serves
    assert fanout.dispatch("c", b"one") == 5
    assert fanout.dispatch("other", b"nobody") == 0
    # Synchronously: no task in between, nothing to wait for.
    assert broken.got == [b"one"] and feed.got == [b"one"]
    assert "a listener of c failed" in caplog.text
    fanout.close_all()
    assert broken.closed and feed.closed
