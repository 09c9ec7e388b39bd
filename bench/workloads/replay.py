"""The replay workload: a subscriber resuming after events it missed (issue 16).

An admin's `orderEvents(after:)` subscription comes back after `missed` events were written
to the log: the time until it has them all, the server's CPU for it, and its memory.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import websockets
from websockets.typing import Subprotocol

from bench.database import connect
from bench.processes import Server, cpu_seconds, log, rss_bytes
from bench.runs import Failure, Run
from bench.workloads.fanout import drive_events, fanout_orders
from models.queries import EVENT_LOG_LOCK
from resolvers.events import encode_cursor

REPLAY_SUBSCRIPTION = (
    "subscription($after: String) { orderEvents(after: $after) { cursor orderId kind status "
    "version } }"
)


async def subscribe_ws(ws_url: str, token: str, after: str | None) -> Any:
    ws = await websockets.connect(
        ws_url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        max_size=None,
    )
    await ws.send(
        orjson.dumps({"type": "connection_init", "payload": {"authorization": token}}).decode()
    )
    ack = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
    if ack.get("type") != "connection_ack":
        raise AssertionError(f"no connection_ack: {ack}")
    query = {"query": REPLAY_SUBSCRIPTION, "variables": {"after": after}}
    await ws.send(orjson.dumps({"type": "subscribe", "id": "1", "payload": query}).decode())
    return ws


async def missed_events(run: Run, count: int) -> tuple[int, int]:
    """`count` events written straight into the log (as committed changes that nobody
    was subscribed to see), spread over 100 new orders; the log's head before them, and
    the first order's id."""
    orders = await fanout_orders(run, 100)
    conn = await connect(run)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", EVENT_LOG_LOCK)
            # The last event the resuming subscriber saw (its cursor), then the ones it missed.
            head = await conn.fetchval(
                "INSERT INTO outbox (topic, payload, created_at, published_at, order_id, "
                "user_id, kind, source, status, version) SELECT 'order.status_changed', '{}', "
                "now(), now(), o.id, o.user_id, 'PAYMENT_FAILED', 'PAYMENT_PROVIDER', 'PENDING', "
                "1 FROM orders o WHERE o.id = $1 RETURNING id",
                orders[0],
            )
            await conn.execute(
                "INSERT INTO outbox (topic, payload, created_at, published_at, order_id, "
                "user_id, kind, source, actor_id, status, previous_status, version) "
                "SELECT 'order.status_changed', '{}', now(), now(), o.id, o.user_id, "
                "'PAYMENT_FAILED', 'PAYMENT_PROVIDER', NULL, 'PENDING', NULL, 1 "
                "FROM generate_series(1, $1) g JOIN orders o ON o.id = ($2::int[])[1 + g % 100]",
                count,
                orders,
            )
    finally:
        await conn.close()
    return int(head), orders[0]


def run_replay(run: Run, server: Server, missed: int) -> None:
    """A subscriber (ADMIN, every order) resumes after `missed` events it did not see:
    time until it has them all, the server's CPU for it, and its memory meanwhile."""
    what = f"replay of {missed:,} events"
    ws_url = server.url.replace("http://", "ws://") + "/graphql"
    token = run.tokens["admin"]

    async def measure() -> dict[str, Any]:
        # A live subscriber first: the feed is running, as on a server in use.
        live = await subscribe_ws(ws_url, token, None)
        try:
            head, order_id = await missed_events(run, missed)
            # One change through the service: the feed hears of it and reads the events
            # before it from the log (a subscriber that was away missed those).
            await drive_events(server.url, token, [order_id], 1.0)
            expected = missed + 1
            for _ in range(expected + 1):  # the resuming subscriber's last one too
                frame = orjson.loads(await asyncio.wait_for(live.recv(), 120))
                if frame.get("type") != "next":
                    raise AssertionError(f"the live subscriber got {frame}")
        finally:
            await live.close()
        await asyncio.sleep(0.5)
        rss_before = rss_bytes(server.process.pid)
        peak = rss_before
        cpu_before = cpu_seconds([server.process.pid])
        started = time.perf_counter()
        ws = await subscribe_ws(ws_url, token, encode_cursor(head))
        cursors: list[str] = []
        first_ms = 0.0
        try:
            while len(cursors) < expected:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 120))
                if frame.get("type") != "next" or frame["payload"].get("errors"):
                    raise AssertionError(f"the resuming subscriber got {frame}")
                if not cursors:
                    first_ms = (time.perf_counter() - started) * 1000
                cursors.append(frame["payload"]["data"]["orderEvents"]["cursor"])
                if len(cursors) % 1000 == 0:
                    peak = max(peak, rss_bytes(server.process.pid))
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds([server.process.pid]) - cpu_before
            peak = max(peak, rss_bytes(server.process.pid))
        finally:
            await ws.close()
        if len(set(cursors)) != expected:
            raise AssertionError(f"{expected - len(set(cursors))} events came twice")
        return {
            "missed": missed,
            "received": len(cursors),
            "seconds": elapsed,
            "first_event_ms": first_ms,
            "events_per_second": expected / elapsed,
            "cpu_seconds": cpu,
            "cpu_us_per_event": cpu / expected * 1e6,
            "rss_mb": rss_before / 2**20,
            "rss_peak_growth_mb": (peak - rss_before) / 2**20,
        }

    try:
        row = asyncio.run(measure())
    except Exception as exc:
        log(f"FAILED {what}: {exc!r}")
        run.failures.append(Failure(what, repr(exc)[:500]))
        return
    run.replay.append(row)
    log(
        f"{what}: {row['seconds']:.2f} s ({row['events_per_second']:,.0f} events/s), first "
        f"after {row['first_event_ms']:.0f} ms, server CPU {row['cpu_seconds']:.2f} s "
        f"({row['cpu_us_per_event']:.0f} us/event), RSS +{row['rss_peak_growth_mb']:.1f} MB"
    )
