"""Mixed traffic for the fault and soak scenarios: orders moved along by an admin, orders
paid through the webhook, and owners reading their orders back. Every answer is sorted
into expected and not; reads check that nobody is served a version older than one they
(or the admin) were already told about."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from infra.security import sign_webhook
from tests.resilience.harness import GQL, ORDER, PAY, WEBHOOK_SECRET, Api, leaks, sql
from tests.resilience.load import Placed

NEXT = {"PENDING": "PAID", "PAID": "SHIPPED", "SHIPPED": "DELIVERED"}
# Answers that are part of normal traffic rather than a failure.
EXPECTED_CODES = {"RATE_LIMITED"}


@dataclass
class Known:
    owner: int
    status: str = "PENDING"
    version: int = 1
    acked_at: float = 0.0  # when the client was last told about a new version


@dataclass
class Traffic:
    api: Api
    tokens: list[str]  # the users'
    user_ids: list[int]
    admin: str
    retry_for: float = 60.0
    orders: dict[str, Known] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    stale_reads: int = 0
    reads: int = 0
    moves: int = 0
    paid: int = 0
    _made: int = 0

    def adopt(self, placed: Placed) -> None:
        """An order the OrderPlacer was told about: moved, paid and read like our own."""
        if placed.order_id is not None:
            self.orders[placed.order_id] = Known(owner=placed.user, acked_at=time.monotonic())

    def classify(self, r: GQL | None, exc: Exception | None = None) -> str:
        if exc is not None:
            kind = type(exc).__name__
        elif r is None:
            kind = "none"
        elif r.status != 200:
            kind = f"HTTP {r.status}"
        elif r.errors:
            kind = ",".join(str(c) for c in r.codes)
        else:
            kind = "ok"
        self.answers[kind] += 1
        if r is not None and (leaked := leaks(r.body)):
            self.wrong.append(f"answer shows internals {leaked}: {r.body}")
        return kind

    @property
    def failures(self) -> int:
        """Answers that were neither data nor an expected code."""
        return sum(n for k, n in self.answers.items() if k != "ok" and k not in EXPECTED_CODES)

    async def _call(self, make: object) -> tuple[GQL | None, str]:
        try:
            r = await make()  # type: ignore[operator]
        except httpx.TransportError as exc:
            return None, self.classify(None, exc)
        return r, self.classify(r)

    async def new_order(self, rng: random.Random) -> str | None:
        user = rng.randrange(len(self.tokens))
        self._made += 1
        token = f"t-{self._made}-{rng.random():.6f}"
        deadline = time.monotonic() + self.retry_for
        while time.monotonic() < deadline:
            r, kind = await self._call(lambda: self.api.create_order(self.tokens[user], token))
            if kind == "ok" and r is not None:
                order_id = str(r.data["createOrder"]["id"])
                self.orders[order_id] = Known(owner=user, acked_at=time.monotonic())
                return order_id
            if kind in EXPECTED_CODES:
                return None
            await asyncio.sleep(0.1)
        self.wrong.append(f"createOrder {token} never answered")
        return None

    async def read_back(self, order_id: str, token: str) -> GQL | None:
        """The order, retried through an outage."""
        deadline = time.monotonic() + self.retry_for
        while time.monotonic() < deadline:
            r, kind = await self._call(lambda: self.api.gql(ORDER, {"id": order_id}, token))
            if kind == "ok":
                return r
            await asyncio.sleep(0.1)
        return None

    async def advance(self, order_id: str) -> None:
        """Move an order one step as the admin; a retry that finds its own earlier attempt
        applied (VERSION_CONFLICT at exactly the next version) counts as done."""
        known = self.orders[order_id]
        target = NEXT.get(known.status)
        if target is None:
            return
        version = known.version
        deadline = time.monotonic() + self.retry_for
        while time.monotonic() < deadline:
            r, kind = await self._call(lambda: self.api.move(self.admin, order_id, target, version))
            if kind == "ok":
                break
            if kind == "VERSION_CONFLICT":
                current = await self.read_back(order_id, self.admin)
                order = current.data["order"] if current else None
                if order and (order["status"], order["version"]) == (target, version + 1):
                    break
                self.wrong.append(f"move {order_id} to {target}@{version}: now {order}")
                return
            if r is not None and r.status == 200 and kind not in ("INTERNAL_SERVER_ERROR",):
                self.wrong.append(f"move {order_id} to {target}@{version}: {r.body}")
                return
            await asyncio.sleep(0.1)
        else:
            self.wrong.append(f"move {order_id} to {target} never answered")
            return
        known.status, known.version, known.acked_at = target, version + 1, time.monotonic()
        self.moves += 1

    async def pay(self, order_id: str) -> None:
        """initiatePayment as the owner, then the provider's SUCCESS webhook."""
        known = self.orders[order_id]
        token = self.tokens[known.owner]
        deadline = time.monotonic() + self.retry_for
        payment_id = None
        while time.monotonic() < deadline and payment_id is None:
            r, kind = await self._call(lambda: self.api.gql(PAY, {"id": order_id}, token))
            if kind == "ok" and r is not None:
                payment_id = r.data["initiatePayment"]["id"]
            elif kind == "INVALID_TRANSITION":
                return  # moved on by the admin meanwhile
            else:
                await asyncio.sleep(0.1)
        if payment_id is None:
            self.wrong.append(f"initiatePayment {order_id} never answered")
            return
        body = (
            f'{{"payment_id": "{payment_id}", "order_id": "{order_id}", "status": "SUCCESS"}}'
        ).encode()
        headers = {
            "content-type": "application/json",
            "x-signature": sign_webhook(body, WEBHOOK_SECRET.encode()),
        }
        while time.monotonic() < deadline:
            try:
                response = await self.api.post("/payments/webhook", content=body, headers=headers)
            except httpx.TransportError as exc:
                self.answers[type(exc).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            self.answers[
                "ok" if response.status_code == 200 else f"webhook {response.status_code}"
            ] += 1
            if response.status_code == 200:
                self.paid += 1
                return
            await asyncio.sleep(0.1)
        self.wrong.append(f"webhook for {order_id} never accepted")

    async def read(self, rng: random.Random) -> None:
        """An owner reads one of their orders: never older than what they were told."""
        if not self.orders:
            return
        order_id = rng.choice(list(self.orders))
        known = self.orders[order_id]
        floor = known.version  # told about before this read started
        r, kind = await self._call(
            lambda: self.api.gql(ORDER, {"id": order_id}, self.tokens[known.owner])
        )
        self.reads += 1
        if kind == "ok" and r is not None:
            order = r.data["order"]
            if order is None or order["version"] < floor:
                self.stale_reads += 1
                self.wrong.append(f"read {order_id}: {order}, after version {floor}")

    async def run(
        self,
        *,
        seconds: float,
        rate: float,
        seed: int = 7,
        mix: tuple[float, float, float, float] = (0.25, 0.3, 0.1, 0.35),
        workers: int = 8,
    ) -> None:
        """`rate` operations a second for `seconds`: new order, admin move, payment, read."""
        rng = random.Random(seed)
        stop_at = time.monotonic() + seconds
        gate = asyncio.Semaphore(workers)
        pending: set[asyncio.Task[None]] = set()
        busy: set[str] = set()

        async def one() -> None:
            async with gate:
                roll = rng.random()
                if roll < mix[0] or not self.orders:
                    if mix[0] > 0:
                        await self.new_order(rng)
                    return
                movable = [o for o, k in self.orders.items() if k.status in NEXT and o not in busy]
                if roll < mix[0] + mix[1] + mix[2] and movable:
                    order_id = rng.choice(movable)
                    busy.add(order_id)
                    try:
                        if roll >= mix[0] + mix[1] and self.orders[order_id].status == "PENDING":
                            await self.pay(order_id)
                            await self._refresh(order_id)
                        else:
                            await self.advance(order_id)
                    finally:
                        busy.discard(order_id)
                    return
                await self.read(rng)

        n = 0
        start = time.monotonic()
        while time.monotonic() < stop_at:
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        if pending:
            await asyncio.gather(*pending)

    async def _refresh(self, order_id: str) -> None:
        r = await self.read_back(order_id, self.admin)
        if r is not None and r.data["order"]:
            order = r.data["order"]
            known = self.orders[order_id]
            if order["version"] > known.version:
                known.status, known.version = order["status"], order["version"]
                known.acked_at = time.monotonic()


async def events_match_versions(database_url: str) -> dict[str, int]:
    """The event log holds exactly one status change per committed status change: for
    every order, events for versions 2..version, each once (its other events, created and
    payments, change no status)."""
    orders = await sql(database_url, "SELECT id, version FROM orders")
    events = await sql(
        database_url,
        "SELECT (payload::json->>'order_id')::int, (payload::json->>'version')::int FROM outbox "
        "WHERE previous_status IS NOT NULL",
    )
    seen = Counter((int(o), int(v)) for o, v in events)
    want = {(int(o), v) for o, version in orders for v in range(2, int(version) + 1)}
    return {
        "changes": len(want),
        "missing events": len(want - set(seen)),
        "phantom events": len(set(seen) - want),
        "duplicate events": sum(n - 1 for n in seen.values() if n > 1),
    }
