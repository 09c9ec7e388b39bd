"""Faults under load: PostgreSQL restarted and crashed, Redis killed and restarted, the
server killed with SIGKILL and started again. Afterwards every order a client was told
about exists exactly once, no clientToken has two orders, every committed status change
has exactly one event, the outbox drains, and subscribers have every event."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from tests.live import LiveServer, free_port, live_server
from tests.redis_server import RedisServer
from tests.resilience.harness import Api, healthy, pg_database, serve, server_env
from tests.resilience.ledger import Scenario
from tests.resilience.load import (
    Feeds,
    OrderPlacer,
    check_orders,
    committed_changes,
    eventually,
    outbox_backlog,
    run_orders,
    wait_subscribers,
)
from tests.resilience.pg_cluster import PrivateCluster
from tests.resilience.traffic import Traffic, events_match_versions

pytestmark = pytest.mark.timeout(240)

UNLIMITED = {"rate_limit_orders_per_minute": 1_000_000}


class KillableRedis(RedisServer):
    def kill(self) -> None:
        """SIGKILL: no shutdown, connections cut."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


async def _users(
    api: Api, database_url: str, prefix: str, n: int
) -> tuple[list[str], list[int], str]:
    tokens, ids = [], []
    for i in range(n):
        token, user_id = await api.signup(f"{prefix}-{i}@example.com")
        tokens.append(token)
        ids.append(user_id)
    admin, _ = await api.admin(database_url, f"{prefix}-admin@example.com")
    return tokens, ids, admin


def _record_orders(scenario: Scenario, placer: OrderPlacer, found: dict[str, int]) -> None:
    scenario.check("acknowledged orders found exactly once", found["acknowledged"] - found["lost"])
    scenario.lose("acknowledged orders", found["lost"])
    scenario.lose("orders with other lines or owner", found["mismatched"])
    scenario.lose("orders never acknowledged", found["unanswered"])
    scenario.lose("clientTokens with two orders", found["tokens with two orders"])
    failures = ", ".join(f"{k} x{n}" for k, n in placer.failures.most_common()) or "none"
    scenario.note(
        f"createOrder: {len(placer.placed)} clientTokens, {placer.retries} retries with the same "
        f"token; failed attempts: {failures}"
    )


def _record_events(scenario: Scenario, events: dict[str, int]) -> None:
    scenario.check("committed status changes with exactly one outbox event", events["changes"])
    scenario.lose("status events (missing from the outbox)", events["missing events"])
    scenario.lose("phantom status events", events["phantom events"])
    scenario.lose("duplicate status events", events["duplicate events"])


async def test_postgres_restarted_during_create_order_load(
    tmp_path: Path, scenario: Scenario
) -> None:
    """Faults: PostgreSQL restarted (fast) and crashed (immediate) during createOrder load"""
    with PrivateCluster() as pg, pg_database(pg.url(), keep=True) as database_url:
        scenario.note(f"a private PostgreSQL cluster (initdb + start in {pg.setup_seconds:.1f} s)")
        env = server_env(database_url, **UNLIMITED)
        with serve(env, tmp_path) as server:
            async with Api.open(server.url, scenario, timeout=5) as api:
                tokens, ids, admin = await _users(api, database_url, "pg-fault", 6)
                traffic = Traffic(api, tokens, ids, admin)
                placer = OrderPlacer(api, tokens, on_ack=traffic.adopt)

                async def faults() -> None:
                    await asyncio.sleep(3)
                    scenario.fault("PostgreSQL restarted (pg_ctl restart -m fast) at 3 s")
                    await asyncio.to_thread(pg.restart, "fast")
                    await asyncio.sleep(3)
                    scenario.fault(
                        "PostgreSQL crashed (pg_ctl stop -m immediate) at ~6 s, "
                        "down 2 s, then started: recovery from WAL"
                    )
                    await asyncio.to_thread(pg.stop, "immediate")
                    await asyncio.sleep(2)
                    await asyncio.to_thread(pg.start)

                started = time.monotonic()
                await asyncio.gather(
                    run_orders(placer, workers=12, seconds=12),
                    traffic.run(seconds=12, rate=10, mix=(0.0, 0.6, 0.0, 0.4), workers=4),
                    faults(),
                )
                scenario.note(f"load ran {time.monotonic() - started:.1f} s")
                assert await outbox_drained(database_url, 20), "the outbox did not drain"
                found = await check_orders(database_url, placer, ids)
                events = await events_match_versions(database_url)
            _record_orders(scenario, placer, found)
            _record_events(scenario, events)
            _record_traffic(scenario, traffic)
            assert healthy(server.url), "the server did not recover"
            assert server.process.poll() is None
    assert not placer.wrong, placer.wrong[:10]
    assert not traffic.wrong, traffic.wrong[:10]
    assert found["acknowledged"] == len(placer.placed) > 0, found
    assert found["lost"] == found["mismatched"] == found["tokens with two orders"] == 0, found
    assert found["orders nobody asked for"] == 0, found
    assert events["missing events"] == events["phantom events"] == 0, events
    assert events["duplicate events"] == 0, events


async def outbox_drained(database_url: str, timeout: float) -> bool:
    async def empty() -> bool:
        return await outbox_backlog(database_url) == 0

    return await eventually(empty, timeout)


async def test_redis_killed_and_restarted_under_load(tmp_path: Path, scenario: Scenario) -> None:
    """Faults: Redis killed (SIGKILL) and restarted twice under mixed load with subscribers"""
    with pg_database() as database_url, KillableRedis() as redis:
        env = server_env(database_url, redis_url=redis.url, **UNLIMITED)
        with serve(env, tmp_path) as server:
            async with Api.open(server.url, scenario, timeout=10) as api:
                tokens, ids, admin = await _users(api, database_url, "redis-fault", 4)
                subscribers = [(ids[i % 4], tokens[i % 4]) for i in range(8)] + [(None, admin)] * 4
                feeds = await Feeds.open(server.ws_url, subscribers, scenario)
                await wait_subscribers(api, len(subscribers))
                traffic = Traffic(api, tokens, ids, admin)

                async def faults() -> None:
                    for down_at, up_at in ((3.0, 6.0), (9.0, 10.0)):
                        await asyncio.sleep(down_at - (time.monotonic() - started))
                        redis.kill()
                        scenario.fault(
                            f"Redis killed (SIGKILL) at {down_at:.0f} s, "
                            f"restarted empty at {up_at:.0f} s"
                        )
                        await asyncio.sleep(up_at - down_at)
                        await asyncio.to_thread(redis.start)

                started = time.monotonic()
                await asyncio.gather(traffic.run(seconds=13, rate=25), faults())
                drained = await outbox_drained(database_url, 20)
                expected = await committed_changes(database_url)

                async def all_delivered() -> bool:
                    return feeds.missing(expected)["missing"] == 0

                delivered = await eventually(all_delivered, 20)
                await asyncio.sleep(1)  # anything more would be a duplicate
                tally = feeds.missing(expected)
                missing = feeds.missing_events(expected)
                events = await events_match_versions(database_url)
                await feeds.close()
            assert healthy(server.url)
    _record_events(scenario, events)
    _record_traffic(scenario, traffic)
    scenario.check("events delivered to the subscribers allowed to see them", tally["delivered"])
    scenario.lose("events not delivered to a subscriber", tally["missing"])
    scenario.lose("events delivered twice", tally["duplicates"])
    scenario.note(
        f"{len(subscribers)} subscribers on both protocols (8 users', 4 admin's); "
        f"subscriptions ended: {tally['closed']}, errors: {tally['errors']}"
    )
    assert not traffic.wrong, traffic.wrong[:10]
    assert traffic.failures == 0, f"requests not answered while Redis was away: {traffic.answers}"
    assert drained, "the outbox did not drain after Redis came back"
    assert delivered and tally["missing"] == 0, f"events missing: {tally} {missing}"
    assert tally["unexpected"] == tally["duplicates"] == tally["errors"] == tally["closed"] == 0, (
        tally
    )
    assert events["missing events"] == events["phantom events"] == 0, events


def _record_traffic(scenario: Scenario, traffic: Traffic) -> None:
    answers = ", ".join(f"{k} x{n}" for k, n in traffic.answers.most_common())
    scenario.note(
        f"traffic: {len(traffic.orders)} orders, {traffic.moves} admin moves, "
        f"{traffic.paid} webhook payments, {traffic.reads} reads; answers: {answers}"
    )
    scenario.check(
        "reads never older than what the reader was told", traffic.reads - traffic.stale_reads
    )
    scenario.lose("stale reads (older than an acknowledged write)", traffic.stale_reads)


async def test_server_killed_mid_load_and_restarted(tmp_path: Path, scenario: Scenario) -> None:
    """Faults: the server killed with SIGKILL mid-load and started again on its port"""
    with pg_database() as database_url:
        env = server_env(database_url, **UNLIMITED)
        port = free_port()
        with contextlib.ExitStack() as stack:
            first: LiveServer = stack.enter_context(
                live_server(env, tmp_path, port=port, name="before-kill")
            )
            url = first.url
            async with Api.open(url, scenario, timeout=5) as api:
                tokens, ids, admin = await _users(api, database_url, "kill-fault", 6)
                traffic = Traffic(api, tokens, ids, admin)
                placer = OrderPlacer(api, tokens, on_ack=traffic.adopt)
                second: list[LiveServer] = []

                async def faults() -> None:
                    await asyncio.sleep(4)
                    os.kill(first.process.pid, signal.SIGKILL)
                    first.process.wait()
                    scenario.fault("server killed with SIGKILL at 4 s, started again on its port")
                    restarted = await asyncio.to_thread(
                        stack.enter_context,
                        live_server(env, tmp_path, port=port, name="after-kill"),
                    )
                    second.append(restarted)

                await asyncio.gather(
                    run_orders(placer, workers=12, seconds=12),
                    traffic.run(seconds=12, rate=10, mix=(0.0, 0.5, 0.1, 0.4), workers=4),
                    faults(),
                )
                drained = await outbox_drained(database_url, 20)
                found = await check_orders(database_url, placer, ids)
                events = await events_match_versions(database_url)
            assert second and healthy(second[0].url)
    _record_orders(scenario, placer, found)
    _record_events(scenario, events)
    _record_traffic(scenario, traffic)
    assert not placer.wrong, placer.wrong[:10]
    assert not traffic.wrong, traffic.wrong[:10]
    assert drained, "the outbox did not drain after the restart"
    assert found["acknowledged"] == len(placer.placed) > 0, found
    assert found["lost"] == found["mismatched"] == found["tokens with two orders"] == 0, found
    assert found["orders nobody asked for"] == 0, found
    assert events["missing events"] == events["phantom events"] == 0, events
