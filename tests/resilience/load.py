"""Load for the fault and soak scenarios: a createOrder client that retries with the same
clientToken until it is told about its order, websocket feeds that record every event
they get, and the checks of what the database really holds afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.resilience.harness import Api, leaks, sql
from tests.resilience.ledger import Scenario
from tests.ws_client import LEGACY, ORDER_STATUS, TRANSPORT, Closed, WSClient

RETRYABLE_CODES = {"INTERNAL_SERVER_ERROR"}
SKUS = ("WIDGET-001", "GADGET-002")


@dataclass
class Placed:
    user: int
    client_token: str
    items: list[tuple[str, int]]
    order_id: str | None = None
    attempts: int = 0


@dataclass
class OrderPlacer:
    """Places orders through outages: on a timeout, a refused connection, a 5xx or an
    INTERNAL_SERVER_ERROR it sends the same createOrder again (same clientToken, same
    items) until it is told the order's id, or its deadline passes."""

    api: Api
    tokens: list[str]
    retry_for: float = 60.0
    on_ack: Callable[[Placed], None] | None = None
    placed: list[Placed] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)

    async def place(self, user: int, client_token: str, items: list[tuple[str, int]]) -> Placed:
        entry = Placed(user, client_token, items)
        self.placed.append(entry)
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        while time.monotonic() < deadline:
            entry.attempts += 1
            try:
                r = await self.api.create_order(self.tokens[user], client_token, items)
            except httpx.TransportError as exc:
                self.failures[type(exc).__name__] += 1
            else:
                if leaked := leaks(r.body):
                    self.wrong.append(f"{client_token}: answer shows internals {leaked}")
                order = (r.data or {}).get("createOrder") if r.status == 200 else None
                if order:
                    entry.order_id = order["id"]
                    if self.on_ack is not None:
                        self.on_ack(entry)
                    return entry
                if r.status < 500 and not set(r.codes) & RETRYABLE_CODES:
                    # A coded answer that is not an outage: IDEMPOTENCY_KEY_REUSED for the
                    # same items would mean the retry was not recognised.
                    self.wrong.append(f"{client_token}: {r.status} {r.body}")
                    return entry
                self.failures[f"HTTP {r.status} {','.join(str(c) for c in r.codes)}"] += 1
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)
        return entry

    @property
    def acknowledged(self) -> list[Placed]:
        return [p for p in self.placed if p.order_id is not None]

    @property
    def retries(self) -> int:
        return sum(p.attempts - 1 for p in self.placed)


async def run_orders(
    placer: OrderPlacer, *, workers: int, seconds: float, rate: float | None = None, seed: int = 1
) -> None:
    """`workers` clients placing new orders for `seconds` (each at most `rate` a second)."""
    rng = random.Random(seed)
    stop_at = time.monotonic() + seconds

    async def worker(n: int) -> None:
        count = 0
        while time.monotonic() < stop_at:
            started = time.monotonic()
            items = [(sku, rng.randint(1, 5)) for sku in rng.sample(SKUS, rng.randint(1, 2))]
            await placer.place(rng.randrange(len(placer.tokens)), f"w{n}-{count}", items)
            count += 1
            if rate:
                await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))

    await asyncio.gather(*(worker(n) for n in range(workers)))


async def check_orders(
    database_url: str, placer: OrderPlacer, user_ids: list[int]
) -> dict[str, int]:
    """What the database holds against what the client was told."""
    rows = await sql(database_url, "SELECT id, user_id, client_token, amount_cents FROM orders")
    by_id = {str(r[0]): r for r in rows}
    per_token = Counter((r[1], r[2]) for r in rows)
    lost = mismatched = unanswered = 0
    for p in placer.placed:
        if p.order_id is None:
            unanswered += 1
            continue
        row = by_id.get(p.order_id)
        if row is None:
            lost += 1
        elif (row[1], row[2]) != (user_ids[p.user], p.client_token) or row[3] != sum(
            1000 * q for _, q in p.items
        ):
            mismatched += 1
    ours = {(user_ids[p.user], p.client_token) for p in placer.placed}
    return {
        "acknowledged": len(placer.acknowledged),
        "lost": lost,
        "mismatched": mismatched,
        "unanswered": unanswered,
        "tokens with two orders": sum(1 for n in per_token.values() if n > 1),
        "orders nobody asked for": sum(1 for key in per_token if key not in ours),
    }


# --- websocket feeds ---------------------------------------------------------------------


@dataclass
class Feed:
    """One websocket subscription to orderStatusChanged(orderId: null)."""

    user_id: int | None  # None: an admin, who sees every order
    ws: WSClient
    op: str
    events: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: list[Any] = field(default_factory=list)
    closed: Closed | None = None
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            try:
                message = await self.ws.receive(self.op, timeout=3600)
            except Closed as exc:
                self.closed = exc
                return
            if message.type == "next" and not (message.payload or {}).get("errors"):
                event = message.payload["data"]["orderStatusChanged"]
                self.events[(event["orderId"], int(event["version"]))] += 1
            else:
                self.errors.append(message.payload)
                if message.type == "complete":
                    return


@dataclass
class Feeds:
    feeds: list[Feed] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        ws_url: str,
        subscribers: list[tuple[int | None, str]],
        scenario: Scenario,
        *,
        concurrency: int = 20,
    ) -> Feeds:
        """One connection and subscription per (user id or None for an admin, token),
        alternating the two protocols. All from one address: no more connecting at once
        than WS_MAX_PENDING_PER_ADDRESS lets one address (20 by default)."""
        feeds = cls()
        gate = asyncio.Semaphore(concurrency)

        async def one(n: int, user_id: int | None, token: str) -> None:
            async with gate:
                protocol = TRANSPORT if n % 2 == 0 else LEGACY
                ws = await WSClient.connect(ws_url, token, protocol=protocol, timeout=30)
                op = await ws.subscribe(ORDER_STATUS)
                feed = Feed(user_id, ws, op)
                feed.task = asyncio.create_task(feed.run())
                feeds.feeds.append(feed)
                scenario.sent("websocket messages", 2)

        await asyncio.gather(*(one(n, u, t) for n, (u, t) in enumerate(subscribers)))
        return feeds

    async def close(self) -> None:
        for feed in self.feeds:
            if feed.task is not None:
                feed.task.cancel()
        for feed in self.feeds:
            if feed.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feed.task
            with contextlib.suppress(Exception):
                await feed.ws.close()

    def missing_events(self, expected: dict[str, tuple[int, int]]) -> list[str]:
        """`order@version for user|admin (has: versions it got of that order)`, up to 20."""
        out: list[str] = []
        for feed in self.feeds:
            for order_id, (owner, version) in expected.items():
                if feed.user_id is not None and feed.user_id != owner:
                    continue
                got = sorted(v for o, v in feed.events if o == order_id)
                for v in range(2, version + 1):
                    if (order_id, v) not in feed.events and len(out) < 20:
                        who = "admin" if feed.user_id is None else f"user {feed.user_id}"
                        out.append(f"{order_id}@{v} for {who} ({feed.ws.protocol}; got {got})")
        return out

    def missing(self, expected: dict[str, tuple[int, int]]) -> dict[str, int]:
        """Per feed kind, how many (order, version) events it should have and has not;
        `expected` maps order id to (owner id, current version)."""
        out: Counter[str] = Counter()
        for feed in self.feeds:
            want = {
                (order_id, v)
                for order_id, (owner, version) in expected.items()
                if feed.user_id is None or feed.user_id == owner
                for v in range(2, version + 1)
            }
            out["missing"] += len(want - set(feed.events))
            out["unexpected"] += len(set(feed.events) - want)
            out["duplicates"] += sum(n - 1 for n in feed.events.values() if n > 1)
            out["delivered"] += len(want & set(feed.events))
            out["errors"] += len(feed.errors)
            out["closed"] += feed.closed is not None
        return dict(out)


async def committed_changes(database_url: str) -> dict[str, tuple[int, int]]:
    """Every order: (owner, version). Versions 2.. are one committed status change each."""
    rows = await sql(database_url, "SELECT id, user_id, version FROM orders")
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


async def outbox_backlog(database_url: str) -> int:
    rows = await sql(database_url, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
    return int(rows[0][0])


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.25
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


async def wait_subscribers(api: Api, count: int, timeout: float = 30.0) -> None:
    async def registered() -> bool:
        return int((await api.http.get("/debug/runtime")).json()["subscribers"]) >= count

    assert await eventually(registered, timeout), f"{count} subscriptions not registered"
