"""Event broker: fan-out of published messages to the listeners of this process.

`InProcessBroker` serves the embedded default (one process). `RedisBroker` shares the
same `Fanout`, fed by one Redis listener per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
import redis.connection
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from infra.tasks import cancel_and_wait

log = logging.getLogger("order_service.broker")


class BrokerUnavailable(Exception):
    """The broker could not take a message; the outbox relay will try again."""


class Listener(Protocol):
    """Takes each message of a channel as it is dispatched, with no queue in between: for
    a consumer that serves many subscribers of its own (and counts them)."""

    def receive(self, message: bytes) -> None: ...

    def close(self) -> None: ...

    def __len__(self) -> int: ...


class Fanout:
    """Channel name -> listeners, all on this process's event loop."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def listen(self, channel: str, listener: Listener) -> None:
        self._listeners.setdefault(channel, []).append(listener)

    def dispatch(self, channel: str, message: bytes) -> int:
        """Hand the message to every listener of the channel; the number of subscribers
        reached."""
        reached = 0
        for listener in tuple(self._listeners.get(channel, ())):
            try:
                listener.receive(message)
            except Exception:
                # A listener's failure must not stop the broker's pump (nor a publisher);
                # it is a bug of that listener, logged loudly rather than lost quietly.
                log.exception("a listener of %s failed on a message", channel)
            reached += len(listener)
        return reached

    def count(self) -> int:
        """Subscribers of this process: those of the listeners."""
        return sum(len(x) for listeners in self._listeners.values() for x in listeners)

    def close_all(self) -> None:
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                listener.close()


class Broker(Protocol):
    fanout: Fanout

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, channel: str, message: bytes) -> None: ...

    async def healthy(self) -> bool: ...


class InProcessBroker:
    """Delivers to subscribers of this process only: the embedded default."""

    def __init__(self) -> None:
        self.fanout = Fanout()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.fanout.close_all()

    async def publish(self, channel: str, message: bytes) -> None:
        # Dispatched on the loop's next turn, as Redis's listener would: listeners deliver
        # to every subscriber in one go, which a publishing request must not wait for.
        # Messages keep their order (the loop runs callbacks first in, first out).
        asyncio.get_running_loop().call_soon(self.fanout.dispatch, channel, message)

    async def healthy(self) -> bool:
        return True


class RedisBroker:
    """Redis pub/sub shared by every process of the service.

    One pattern subscription (one connection, one listener task) per process feeds the
    local `Fanout`. Publishing uses a small pool with short timeouts and no retries, so a
    publish while Redis is down fails fast with `BrokerUnavailable`; the caller's outbox
    keeps the event and the relay publishes it later. The listener reconnects by itself
    with capped exponential backoff, then awaits `on_reconnect(lost_at)` before it reads
    on, so that the app can hand its subscribers what was published while it was away
    (Redis pub/sub keeps nothing for a listener that is not there).

    Redis pub/sub ignores the database number of the URL; channels are named
    `{prefix}events:{db}:{channel}` so that services on separate databases of one Redis, or
    with separate prefixes, never hear each other.
    """

    PING_INTERVAL = 5.0
    SILENCE_LIMIT = 15.0
    BACKOFF_MIN = 0.1
    BACKOFF_MAX = 1.0
    FAIL_FAST_SECONDS = 0.5

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "order-service:",
        timeout: float = 0.5,
        on_reconnect: Callable[[datetime], Awaitable[object]] | None = None,
    ) -> None:
        self.fanout = Fanout()
        self.on_reconnect = on_reconnect
        db = int(redis.connection.parse_url(url).get("db") or 0)
        self._namespace = f"{prefix}events:{db}:"
        self.client_name = f"order-service-{socket.gethostname()}-{os.getpid()}"
        common: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_keepalive": True}
        self._publisher = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            client_name=f"{self.client_name}-pub",
            max_connections=32,
            # One immediate retry on a broken connection (a pooled one that Redis closed
            # while restarting); none on a timeout, which would only double the wait.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            **common,
        )
        # Reads on the listener's connection may wait forever; its own pings tell a dead
        # connection from an idle one. Its loop does the reconnecting.
        self._listener_client = aioredis.Redis.from_url(
            url,
            socket_timeout=None,
            client_name=f"{self.client_name}-sub",
            retry=Retry(NoBackoff(), 0),
            **common,
        )
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._heard_at = 0.0  # wall clock: compared with the outbox's timestamps
        self._fail_until = 0.0

    @property
    def listening(self) -> bool:
        return self._listening

    async def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen_forever(), name="redis-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            await cancel_and_wait(self._listener)
            self._listener = None
        self.fanout.close_all()
        await self._publisher.aclose()
        await self._listener_client.aclose()

    async def publish(self, channel: str, message: bytes) -> None:
        # Right after a failure, fail at once rather than wait on a Redis that is still down.
        if time.monotonic() < self._fail_until:
            raise BrokerUnavailable("Redis was unreachable a moment ago")
        try:
            # No span of its own: the caller's `events.publish` span is this call.
            await self._publisher.publish(self._namespace + channel, message)
        except (RedisError, OSError) as exc:
            self._fail_until = time.monotonic() + self.FAIL_FAST_SECONDS
            raise BrokerUnavailable(f"Redis publish failed: {exc}") from exc

    async def healthy(self) -> bool:
        """Redis answers, and this process hears what the others publish."""
        try:
            return bool(await self._publisher.ping()) and self.listening
        except (RedisError, OSError):
            return False

    async def _listen_forever(self) -> None:
        delay = self.BACKOFF_MIN
        # When this process last heard Redis: what was published since then is replayed
        # once the subscription is back.
        lost_at: datetime | None = None
        while True:
            pubsub = self._listener_client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(self._namespace + "*")
                self._heard_at = time.time()
                self._listening = True
                delay = self.BACKOFF_MIN
                if lost_at is not None:
                    log.info("Redis subscription restored")
                    await self._replay(lost_at)
                    lost_at = None
                await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if lost_at is None:
                    log.warning("no Redis subscription (%s); reconnecting", exc)
                    lost_at = datetime.fromtimestamp(self._heard_at or time.time(), UTC)
            finally:
                self._listening = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            # Jitter spreads the reconnects of many processes after an outage.
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.BACKOFF_MAX)

    async def _replay(self, lost_at: datetime) -> None:
        if self.on_reconnect is None:
            return
        try:
            await self.on_reconnect(lost_at)
        except Exception:
            log.warning("replaying events missed while Redis was away failed", exc_info=True)

    async def _pump(self, pubsub: PubSub) -> None:
        skip = len(self._namespace)
        heard = pinged = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None:
                heard = now
                self._heard_at = time.time()
                if message["type"] == "pmessage":
                    channel = message["channel"].decode(errors="replace")[skip:]
                    self.fanout.dispatch(channel, message["data"])
                continue
            if now - heard > self.SILENCE_LIMIT:
                raise ConnectionError("Redis stopped answering on the subscription")
            if now - heard > self.PING_INTERVAL and now - pinged > self.PING_INTERVAL:
                pinged = now
                await pubsub.ping()
